r"""Converts raw MovieLens or Amazon 2018 files into LC-Rec-format datasets.

The bundled MovieLens data was made with (from the repository root):

  python -m launch.convert_data --source=movielens \
    --raw_dir=../shared/data/movielens_latest_small/raw \
    --out_dir=testdata/movielens --name=ml-latest-small

Amazon 2018 (review and metadata JSON-lines, gz or plain):

  python -m launch.convert_data --source=amazon \
    --reviews=Industrial_and_Scientific.json.gz \
    --meta=meta_Industrial_and_Scientific.json.gz \
    --out_dir=/tmp/scientific --name=Scientific

Bad input prints one line on stderr and exits with status 1.
"""
import pathlib
import sys

from absl import app
from absl import flags

from vstar_jax import errors
from vstar_jax.data import convert
from vstar_jax.data import files

_SOURCE = flags.DEFINE_enum('source', None, ['movielens', 'amazon'],
                            'Raw data format.', required=True)
_RAW_DIR = flags.DEFINE_string(
    'raw_dir', None,
    'MovieLens: folder with ratings.csv[.gz] and movies.csv[.gz].')
_REVIEWS = flags.DEFINE_string('reviews', None, 'Amazon: review JSON-lines.')
_META = flags.DEFINE_string('meta', None, 'Amazon: metadata JSON-lines.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Output folder.',
                               required=True)
_NAME = flags.DEFINE_string('name', None, 'Dataset name (file stem).',
                            required=True)
_MIN_COUNT = flags.DEFINE_integer('min_count', 5, 'k of the k-core filter.',
                                  lower_bound=1)
_COMPRESS = flags.DEFINE_boolean('compress', True, 'Write .json.gz files.')


def _convert() -> convert.Converted:
  if _SOURCE.value == 'movielens':
    if not _RAW_DIR.value:
      raise app.UsageError('--source=movielens needs --raw_dir')
    raw = pathlib.Path(_RAW_DIR.value)
    paths = []
    for stem in ('ratings.csv', 'movies.csv'):
      path = files.find_file(raw, stem)
      if path is None:
        raise errors.DataError(f'{raw / stem}: file not found (nor .gz)')
      paths.append(path)
    return convert.convert_movielens(*paths, min_count=_MIN_COUNT.value)
  if not _REVIEWS.value or not _META.value:
    raise app.UsageError('--source=amazon needs --reviews and --meta')
  return convert.convert_amazon(_REVIEWS.value, _META.value,
                                min_count=_MIN_COUNT.value)


def main(argv):
  del argv
  try:
    converted = _convert()
    written = convert.write_converted(converted, _OUT_DIR.value, _NAME.value,
                                      compress=_COMPRESS.value)
  except errors.DataError as e:
    print(f'convert_data: error: {e}', file=sys.stderr)
    sys.exit(1)
  num = sum(len(s) for s in converted.inter.values())
  print(f'users {len(converted.inter)} items {len(converted.item)} '
        f'interactions {num}')
  for path in written:
    print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)
