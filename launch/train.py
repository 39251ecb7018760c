"""Trains and evaluates a V-STAR generative recommender.

  python -m launch.train --config=launch/configs/default.py --workdir=runs/default
  python -m launch.train --config=launch/configs/scientific.py \
      --workdir=runs/sci --config.seed=1 --config.sft.learning_rate=5e-4

Runs unchanged on one device, on every local device (the default mesh puts
them all on the 'data' axis; see --config.mesh.*) and on several processes:

  python -m launch.train ... --coordinator_address=host0:1234 \
      --num_processes=2 --process_id=0        # and =1 on the other host

(or JAX_COORDINATOR_ADDRESS / a cluster that jax.distributed.initialize()
detects, e.g. a TPU pod slice: --distributed). Every process runs the same
command and workdir; process 0 writes logs and results.

With config.sid.inputs 'cf' or 'text+cf' (launch/configs/scientific.py's
default) the run first trains the ID model of config.sid.cf_model in
WORKDIR/cf_model/ and builds its SIDs from that model's item table
(vstar_jax.train.cf_model); a rerun resumes whichever part was interrupted.

Kept short on purpose (flax examples' main.py): the logic is in
vstar_jax.train.loop. A bad input file, config value or config field ends
the run with a one-line error on stderr ("train: error: ...") and exit code 1
before anything is written to the work directory: the config is parsed and
checked by vstar_jax.config, then against the devices and the data. SIGTERM (preemption) saves a
checkpoint at the current step and exits with code 75 (EX_TEMPFAIL): rerun
the same command to resume.
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from launch import runtime
from vstar_jax.train import cf_model
from vstar_jax.train import loop
from vstar_jax.train import preemption

PREEMPTED_EXIT_CODE = 75

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
flags.mark_flags_as_required(['config'])
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0, for a run of several processes.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes of a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process, in [0, num_processes).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Call jax.distributed.initialize() with what it detects (TPU pod, SLURM, '
    'JAX_COORDINATOR_ADDRESS...); implied by the three flags above.')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag or --config.* override is one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    print(f'train: error: {runtime.flag_error(argv, e)}', file=sys.stderr)
    sys.exit(1)


def _train() -> dict:
  config = runtime.parse_config_flag(_CONFIG.value)   # every field, checked once
  cf_config = None
  if cf_model.required(config):   # SIDs from a CF model's item table
    cf_config = cf_model.on_run_data(
        runtime.load_config_file(config.sid.cf_model), config)
  runtime.init_distributed(
      _DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  preemption.install()
  if cf_config is not None:
    stopped = cf_model.ensure_item_embeddings(config, cf_config,
                                              _WORKDIR.value)
    if stopped is not None:
      return stopped
  return loop.train_and_evaluate(config, _WORKDIR.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  results = runtime.run_main('train', _train)
  if any(s.get('preempted') for s in results['stages'].values()):
    logging.warning('Exiting with code %d (preempted).', PREEMPTED_EXIT_CODE)
    sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main, flags_parser=_parse_flags)
