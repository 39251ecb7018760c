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

Kept short on purpose (flax examples' main.py): the logic is in
vstar_jax.train.loop. A bad input file or config value ends the run with a
one-line error on stderr and exit code 1. SIGTERM (preemption) saves a
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  runtime.init_distributed(
      _DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  preemption.install()
  results = runtime.run_main('train', lambda: loop.train_and_evaluate(
      _CONFIG.value, _WORKDIR.value))
  if any(s.get('preempted') for s in results['stages'].values()):
    logging.warning('Exiting with code %d (preempted).', PREEMPTED_EXIT_CODE)
    sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
