r"""Prints a one-line-per-stat summary of a dataset and its split sizes.

  python -m launch.data_stats --data_dir=testdata/movielens \
    --name=ml-latest-small
  SCI=../shared/data/amazon_scientific
  python -m launch.data_stats --data_dir=$SCI --name=Scientific \
    --index_path=$SCI/indexes/rkmeans_zcr/Scientific.index.json.gz

Bad input prints one line on stderr and exits with status 1.
"""
import sys

from absl import app
from absl import flags
import numpy as np

from vstar_jax import errors
from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import splits
from vstar_jax.sid import stats as sid_stats

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Dataset folder.',
                                required=True)
_NAME = flags.DEFINE_string('name', None, 'Dataset name (file stem).',
                            required=True)
_INDEX_PATH = flags.DEFINE_string(
    'index_path', None, 'SID index file (default: <name>.index.json[.gz] in '
    '--data_dir, if present).')
_LOO_HISTORY = flags.DEFINE_integer(
    'loo_max_history', 20, 'History cap of the leave-one-out split.',
    lower_bound=1)
_CHRONO_HISTORY = flags.DEFINE_integer(
    'chrono_max_history', 10, 'History cap of the chronological split.',
    lower_bound=1)


def summary(ds: dataset_lib.Dataset) -> list[str]:
  """The stat lines for `ds` (splits included)."""
  lengths = np.asarray([len(s) for s in ds.sequences])
  lines = [
      f'dataset: {ds.name}',
      f'users: {ds.num_users}',
      f'items: {ds.num_items}',
      f'interactions: {ds.num_interactions}',
  ]
  if lengths.size:
    lines.append(
        f'sequence_length: mean {lengths.mean():.2f} median '
        f'{np.median(lengths):g} min {lengths.min()} max {lengths.max()}')
  if ds.num_users and ds.num_items:
    density = ds.num_interactions / (ds.num_users * ds.num_items)
    lines.append(f'density: {density:.5f}')
  titled = sum(bool(m['title']) for m in ds.item_meta)
  lines.append(f'items_with_title: {titled}')
  lines.append(f'timestamps: {"yes" if ds.timestamps is not None else "no"}')
  if ds.sids is not None:
    coll = sid_stats.collision_summary(ds.sids)
    sizes = '/'.join(map(str, ds.codebook_sizes or ()))
    lines += [f'sid_levels: {ds.num_levels}',
              f'sid_codebook_sizes: {sizes}',
              f'sid_unique: {coll["unique_sids"]}',
              f'sid_colliding_items: {coll["colliding_items"]}']
  loo = splits.leave_one_out_split(ds, max_history=_LOO_HISTORY.value)
  lines.append(_split_line('leave_one_out', loo, _LOO_HISTORY.value))
  if ds.timestamps is None:
    lines.append('chronological: n/a (no <name>.time.json)')
  else:
    chrono = splits.chronological_split(ds,
                                        max_history=_CHRONO_HISTORY.value)
    lines.append(_split_line('chronological', chrono, _CHRONO_HISTORY.value))
  return lines


def _split_line(label: str, split: splits.Split, max_history: int) -> str:
  return (f'{label}: train {len(split.train)} valid {len(split.valid)} '
          f'test {len(split.test)} (max_history {max_history})')


def main(argv):
  del argv
  try:
    ds = dataset_lib.load_dataset(_DATA_DIR.value, _NAME.value,
                                  index_path=_INDEX_PATH.value)
    lines = summary(ds)
  except errors.DataError as e:
    print(f'data_stats: error: {e}', file=sys.stderr)
    sys.exit(1)
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
