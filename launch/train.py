"""Trains and evaluates a V-STAR generative recommender.

  python -m launch.train --config=launch/configs/default.py --workdir=runs/default
  python -m launch.train --config=launch/configs/scientific.py \
      --workdir=runs/sci --config.seed=1 --config.sft.learning_rate=5e-4

Kept short on purpose (flax examples' main.py): the logic is in
vstar_jax.train.loop. A bad input file or config value ends the run with a
one-line error on stderr and exit code 1.
"""
from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from launch import runtime
from vstar_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  runtime.run_main('train', lambda: loop.train_and_evaluate(
      _CONFIG.value, _WORKDIR.value))


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
