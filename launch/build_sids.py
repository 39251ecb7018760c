r"""Builds semantic IDs of a catalogue: embeddings -> residual k-means ->
collision resolution -> LC-Rec index file.

  python -m launch.build_sids --dataset=Scientific --out_dir=runs/sids \
      --embeddings=runs/emb/Scientific.npy --num_levels=3 --codebook_size=256

Writes, all or nothing: <out_dir>/<dataset>.index.json.gz (LC-Rec tokens),
<out_dir>/embeddings.npy (float32 [N, D], as used) and
<out_dir>/sid_stats.json (config, per-level k-means stats, SID stats before
and after collision resolution, trie sizes, seconds per phase). Bad input:
one line on stderr, exit code 1, no output written.
"""
import io
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from vstar_jax.sid import atomic_io
from vstar_jax.sid import collisions
from vstar_jax.sid import errors
from vstar_jax.sid import index_format
from vstar_jax.sid import rkmeans
from vstar_jax.sid import stats
from vstar_jax.sid import trie

_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Dataset folder (used once the text encoder is wired).')
_DATASET = flags.DEFINE_string(
    'dataset', None, 'Dataset name, e.g. Scientific.', required=True)
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Output folder.',
                               required=True)
_NUM_LEVELS = flags.DEFINE_integer('num_levels', 3, 'SID levels L.')
_CODEBOOK_SIZE = flags.DEFINE_integer('codebook_size', 256,
                                      'Codes per level V.')
_NUM_ITERS = flags.DEFINE_integer('num_iters', 20,
                                  'Lloyd iterations per level.')
_SEED = flags.DEFINE_integer('seed', 0, 'k-means++ seed.')
_BALANCED = flags.DEFINE_bool(
    'balanced', False, 'Cap each code at ceil(N / V) items per level.')
_COLLISIONS = flags.DEFINE_enum(
    'collisions', 'reassign', collisions.METHODS,
    'reassign: last-level re-assignment; extra_level: TIGER extra level.')
_EMBEDDINGS = flags.DEFINE_string(
    'embeddings', None, 'Precomputed item embeddings, .npy float [N, D].')


def _load_embeddings(flag_values) -> tuple[list[str] | None, np.ndarray]:
  """Item ids (None: '0'..'N-1') and embeddings [N, D].

  The seam for the dataset reader and text encoder: for now only
  --embeddings is supported.
  """
  path = flag_values.embeddings
  if path is None:
    raise errors.EmbeddingsError(
        'text encoder not yet wired: pass --embeddings=PATH.npy ([N, D] '
        'float)')
  try:
    embeddings = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.EmbeddingsError(
        f'{path}: cannot load a .npy array ({type(e).__name__}: {e})') from e
  rkmeans.check_embeddings(embeddings, name=path)
  return None, embeddings


def build(embeddings: np.ndarray, *,
          num_levels: int, codebook_size: int, num_iters: int, seed: int,
          balanced: bool, collisions_method: str,
          ) -> tuple[np.ndarray, dict]:
  """Codes [N, L'] with unique SIDs (L' = L + 1 for extra_level) and stats."""
  timings = {}
  start = time.perf_counter()
  raw_codes, codebooks, kmeans_stats = rkmeans.residual_kmeans(
      jax.random.key(seed), embeddings, num_levels=num_levels,
      codebook_size=codebook_size, num_iters=num_iters, balanced=balanced)
  timings['kmeans'] = time.perf_counter() - start

  start = time.perf_counter()
  sizes = [codebook_size] * num_levels
  if collisions_method == 'reassign':
    last = num_levels - 1
    codes, collision_stats = collisions.resolve_by_reassignment(
        raw_codes, rkmeans.level_residuals(
            embeddings, raw_codes, codebooks, last), codebooks[last])
  else:
    codes, collision_stats = collisions.resolve_by_extra_level(raw_codes)
    sizes.append(collision_stats['extra_level_vocab_size'])
  timings['collisions'] = time.perf_counter() - start

  start = time.perf_counter()
  catalogue = trie.build_trie(codes, vocab_size=max(sizes))  # checks SIDs
  timings['trie'] = time.perf_counter() - start

  start = time.perf_counter()
  before = stats.sid_stats(raw_codes, codebook_size)
  after = stats.sid_stats(codes, sizes)
  timings['stats'] = time.perf_counter() - start
  return codes, {
      'config': {'num_levels': num_levels, 'codebook_size': codebook_size,
                 'num_iters': num_iters, 'seed': seed, 'balanced': balanced,
                 'collisions': collisions_method},
      'num_items': int(embeddings.shape[0]),
      'embedding_dim': int(embeddings.shape[1]),
      'kmeans': kmeans_stats,
      'collisions': collision_stats,
      'before_resolution': before,
      'after_resolution': after,
      'trie': {'num_prefixes': list(catalogue.num_prefixes),
               'vocab_size': catalogue.vocab_size,
               'device_bytes': catalogue.nbytes},
      'timings_s': timings,
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    start = time.perf_counter()
    item_ids, embeddings = _load_embeddings(flags.FLAGS)
    load_s = time.perf_counter() - start
    embeddings = embeddings.astype(np.float32)
    codes, sid_stats = build(
        embeddings, num_levels=_NUM_LEVELS.value,
        codebook_size=_CODEBOOK_SIZE.value, num_iters=_NUM_ITERS.value,
        seed=_SEED.value, balanced=_BALANCED.value,
        collisions_method=_COLLISIONS.value)
    sid_stats['timings_s'] = {'load': load_s, **sid_stats['timings_s']}
    index_bytes = index_format.encode_index(codes, item_ids)
  except errors.SidError as e:
    print(f'build_sids: {e}', file=sys.stderr)
    return 1
  buffer = io.BytesIO()
  np.save(buffer, embeddings, allow_pickle=False)
  out_dir = _OUT_DIR.value
  atomic_io.write_files_atomically({
      os.path.join(out_dir, f'{_DATASET.value}.index.json.gz'): index_bytes,
      os.path.join(out_dir, 'embeddings.npy'): buffer.getvalue(),
      os.path.join(out_dir, 'sid_stats.json'):
          json.dumps(sid_stats, indent=1).encode('utf-8'),
  })
  after = sid_stats['after_resolution']
  print(f'{after["num_items"]} items, {after["unique_sids"]} unique SIDs '
        f'({sid_stats["before_resolution"]["colliding_items"]} colliding '
        f'before {_COLLISIONS.value}) -> {out_dir}')
  return 0


if __name__ == '__main__':
  jax.config.update('jax_threefry_partitionable', True)  # as tests/conftest
  jax.config.config_with_absl()
  app.run(main)
