"""Prints the top-K recommendations of a trained run for one user.

  python -m launch.recommend --workdir=runs/default --user=42
  python -m launch.recommend --workdir=runs/default --history=10,52,7 --top_k=5

Item and user ids are the dataset's own ids (the keys of its JSON files).
With --user, the history is the user's whole sequence (the items the model
has not seen are recommended next).
"""
from absl import app
from absl import flags
import jax
import numpy as np

from launch import runtime
from launch.configs import common
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.train import evaluation
from vstar_jax.train import recommender

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
_USER = flags.DEFINE_string('user', None, 'A user id of the dataset.')
_HISTORY = flags.DEFINE_list('history', None,
                             'Comma-separated item ids, oldest first.')
_TOP_K = flags.DEFINE_integer('top_k', 10, 'How many items to print.')
_STAGE = flags.DEFINE_string('stage', 'sft', 'Training stage to use.')


def _history_indices(exp) -> list[int]:
  ds = exp.dataset
  if (_USER.value is None) == (_HISTORY.value is None):
    raise errors.ConfigError('give exactly one of --user and --history')
  if _USER.value is not None:
    if _USER.value not in ds.user_ids:
      raise errors.ConfigError(f'--user={_USER.value}: no such user in '
                                   f'{ds.name}')
    return ds.sequences[ds.user_ids.index(_USER.value)].tolist()
  index = {item: i for i, item in enumerate(ds.item_ids)}
  unknown = [h for h in _HISTORY.value if h not in index]
  if unknown:
    raise errors.ConfigError(f'--history: unknown item id(s) {unknown} '
                                 f'in {ds.name}')
  return [index[h] for h in _HISTORY.value]


def _recommend():
  config = evaluation.load_run_config(_WORKDIR.value, common.base_config())
  if _TOP_K.value < 1:
    raise errors.ConfigError('--top_k must be >= 1')
  exp = experiment.load_experiment(config, _WORKDIR.value)
  hist = _history_indices(exp)[-config.data.max_history:]
  width = config.data.max_history
  history = np.full((1, width), -1, np.int32)
  mask = np.zeros((1, width), bool)
  history[0, width - len(hist):] = hist
  mask[0, width - len(hist):] = True
  model = recommender.from_config(config, exp)
  params = evaluation.restore_params(config, model, _WORKDIR.value,
                                     _STAGE.value)
  rank = jax.jit(model.make_rank_fn(_TOP_K.value))
  res = jax.device_get(rank(params, exp.trie, *jax.device_put(
      (history, mask))))
  ds = exp.dataset
  print(f'History ({len(hist)} items, newest last):')
  for i in hist[-5:]:
    print(f'  {ds.item_ids[i]:>8}  {ds.item_meta[i].get("title", "")}')
  print(f'Top {_TOP_K.value} ({model.kind}, stage {_STAGE.value}):')
  scores = getattr(res, 'scores', None)
  for rank_pos, item in enumerate(np.asarray(res.items)[0]):
    if item < 0:
      continue
    score = '' if scores is None else f'{float(scores[0, rank_pos]):9.4f}'
    print(f'{rank_pos + 1:3d}. {ds.item_ids[item]:>8} {score}  '
          f'{ds.item_meta[item].get("title", "")}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  runtime.run_main('recommend', _recommend)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
