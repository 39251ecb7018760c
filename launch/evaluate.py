"""Re-evaluates the best checkpoint of a training run.

  python -m launch.evaluate --workdir=runs/default
  python -m launch.evaluate --workdir=runs/default --beam_width=20 --stage=sft
  python -m launch.evaluate --workdir=runs/default --exclude_history

Prints the Markdown table and writes WORKDIR/eval_<stage>_beam<K>.json and
the per-user ranks beside it (WORKDIR/eval_<stage>_beam<K>.user_ranks/);
under the history rule that excludes history items (--exclude_history, or a
run trained with config.eval.exclude_history) the name ends in
`_exclude_history` (eval_<stage>_beam<K>_exclude_history.json).
"""
import dataclasses
import os

from absl import app
from absl import flags
import jax

from launch import runtime
from launch.configs import common
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.data import files
from vstar_jax.eval import history_rule
from vstar_jax.eval import user_ranks
from vstar_jax.train import evaluation
from vstar_jax.train import recommender

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
_STAGE = flags.DEFINE_string('stage', 'sft', 'Training stage to evaluate.')
_BEAM = flags.DEFINE_integer('beam_width', None,
                             'Ranked list length; default: the run config.')
_EXCLUDE_HISTORY = flags.DEFINE_bool(
    'exclude_history', None,
    'The history rule (vstar_jax/eval/history_rule.py): exclude items of '
    "the user's history from the ranked lists; default: the run config.")


def _evaluate():
  config = evaluation.load_run_config(_WORKDIR.value, common.base_config())
  if _BEAM.value is not None:
    if _BEAM.value < 1:
      raise errors.ConfigError(f'--beam_width={_BEAM.value}: must be >= 1')
    config = dataclasses.replace(config, eval=dataclasses.replace(
        config.eval, beam_width=_BEAM.value))
  if _EXCLUDE_HISTORY.value is not None:
    config = dataclasses.replace(config, eval=dataclasses.replace(
        config.eval, exclude_history=_EXCLUDE_HISTORY.value))
  exclude = config.eval.exclude_history
  exp = experiment.load_experiment(config, _WORKDIR.value)
  model = recommender.from_config(config, exp)
  params = evaluation.restore_params(config, model, _WORKDIR.value,
                                     _STAGE.value)
  metrics, seconds, ranks = evaluation.final_evaluation(config, exp, model,
                                                        params)
  out = {'stage': _STAGE.value, 'beam_width': config.eval.beam_width,
         'exclude_history': exclude, 'ranking': model.ranking,
         'metrics': metrics, 'seconds': seconds,
         'git_commit': evaluation.git_commit()}
  path = os.path.join(_WORKDIR.value, f'eval_{_STAGE.value}_beam'
                      f'{config.eval.beam_width}'
                      f'{"_exclude_history" if exclude else ""}.json')
  files.write_json(path, out)
  user_ranks.write(path, _STAGE.value, ranks)
  print(f'{history_rule.describe(exclude)}:')
  print(evaluation.results_table({'metrics': {_STAGE.value: metrics}}))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  runtime.run_main('evaluate', _evaluate)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
