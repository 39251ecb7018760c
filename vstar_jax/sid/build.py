"""End-to-end SID build of a catalogue, as a library (host-side driver).

item text -> MiniLM embeddings (`dataset_embeddings`) -> residual k-means ->
collision resolution -> unique SIDs checked by building the prefix trie
(`build_sids`). `launch/build_sids.py` writes the result as files; the
training binary calls the same two functions in-process for a dataset that
has no index.

Defaults (`SidBuildConfig`), measured on Amazon Scientific (4,344 items,
all-MiniLM-L6-v2 text embeddings, seeds 0 and 1; table in WORKSPACE.md):
L=3 levels of V=256 codes, balanced k-means, last-level re-assignment.
Plain k-means puts 726-1109 items on one code at levels 1-2 (the residuals
are far from isotropic), so 1,690-1,811 items collide before resolution;
balanced k-means (at most 17 items per code) halves that (940-963), lowers
the final residual (0.308 vs 0.314-0.322) and spreads the trie (3,244-3,268
depth-2 prefixes vs 1,821-2,012). L=4 cuts collisions further (636-658) but
its 4th level is nearly a chain (1.15 children per parent); L=3 is the
paper's length and re-assignment keeps it, moving 13% of the items' last
code.
"""
import dataclasses
import time
from typing import Any

import chex
import numpy as np

from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import sid_index
from vstar_jax.sid import collisions
from vstar_jax.sid import errors
from vstar_jax.sid import rkmeans
from vstar_jax.sid import stats
from vstar_jax.sid import trie
from vstar_jax.text import embed
from vstar_jax.text import item_text


@dataclasses.dataclass(frozen=True)
class SidBuildConfig:
  """How to turn item embeddings into unique SIDs.

  Attributes:
    num_levels: L, k-means levels (the SID length, plus one with
      'extra_level').
    codebook_size: V, codes per level.
    num_iters: Lloyd iterations per level.
    balanced: cap each code at ceil(N / V) items per level.
    collisions: 'reassign' (the last level is re-assigned inside each
      parent prefix; L stays) or 'extra_level' (TIGER: rank in the
      collision group as level L + 1).
  """
  num_levels: int = 3
  codebook_size: int = 256
  num_iters: int = 20
  balanced: bool = True
  collisions: str = 'reassign'

  def __post_init__(self):
    max_levels = len(sid_index.LEVEL_LETTERS) - (
        self.collisions == 'extra_level')
    for name, low, high in (('num_levels', 1, max_levels),
                            ('codebook_size', 2, sid_index.MAX_CODE),
                            ('num_iters', 0, 10_000)):
      value = getattr(self, name)
      if (not isinstance(value, int) or isinstance(value, bool)
          or not low <= value <= high):
        raise errors.SidError(
            f'{name}={value!r}: need an int in [{low}, {high}]')
    if self.collisions not in collisions.METHODS:
      raise errors.SidError(
          f'collisions={self.collisions!r}: need one of {collisions.METHODS}')


def dataset_embeddings(
    dataset: dataset_lib.Dataset, *,
    text_config: item_text.ItemTextConfig = item_text.ItemTextConfig(),
    cache_dir: str | None = None,
    model_dir: str | None = None,
) -> np.ndarray:
  """MiniLM embeddings of every catalogue item's text, in dataset order.

  Args:
    dataset: a loaded dataset with item metadata (`<name>.item.json`).
    text_config: fields and description truncation of the item text.
    cache_dir: embedding cache folder (see `embed.embed_texts`); None: no
      cache.
    model_dir: MiniLM model folder; None: the installed package's.

  Returns:
    [N, 384] float32 unit-norm embeddings, row n for dataset.item_ids[n].

  Raises:
    DataError: the dataset has no item file, an item has no text in the
      configured fields (naming the file and item), or the model or cache
      files are bad.
  """
  item_path = dataset.paths.get('item')
  if item_path is None:
    raise errors.SidError(
        f'dataset {dataset.name!r}: no {dataset.name}.item.json[.gz], so no '
        'item text to embed')
  meta = dict(zip(dataset.item_ids, dataset.item_meta))
  try:
    texts = item_text.item_texts(meta, dataset.item_ids, text_config)
  except item_text.ItemTextError as e:
    raise item_text.ItemTextError(f'{item_path}: {e}') from e
  return embed.embed_texts(texts, model_dir=model_dir, cache_dir=cache_dir)


def load_embeddings(path: str, num_items: int) -> np.ndarray:
  """[N, D] float embeddings from a .npy file with one row per item.

  Raises:
    EmbeddingsError: not a loadable .npy, not a finite float [N, D] array,
      or a row count other than num_items (naming the file).
  """
  try:
    embeddings = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.EmbeddingsError(
        f'{path}: cannot load a .npy array ({type(e).__name__}: {e})') from e
  rkmeans.check_embeddings(embeddings, name=path)
  if embeddings.shape[0] != num_items:
    raise errors.EmbeddingsError(
        f'{path}: {embeddings.shape[0]} rows for {num_items} catalogue items')
  return embeddings


def concat_normalized(parts: dict[str, np.ndarray]) -> np.ndarray:
  """Row-L2-normalised embeddings side by side (e.g. text + CF).

  Normalising first gives each source an equal share of every distance
  (both blocks have unit-norm rows), whatever its scale or width.

  Args:
    parts: name (for errors, e.g. the file) -> [N, D_i] float embeddings,
      the same N rows in the same item order; checked here.

  Returns:
    [N, sum D_i] float32.

  Raises:
    EmbeddingsError: a bad array, row counts that differ or a zero row.
  """
  out, num_rows = [], None
  for name, emb in parts.items():
    rkmeans.check_embeddings(emb, name=name)
    if num_rows is not None and emb.shape[0] != num_rows:
      raise errors.EmbeddingsError(
          f'{name}: {emb.shape[0]} rows, but {next(iter(parts))} has '
          f'{num_rows}')
    num_rows = emb.shape[0]
    norm = np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    zero = np.flatnonzero(norm[:, 0] == 0)
    if zero.size:
      raise errors.EmbeddingsError(
          f'{name}: row {zero[0]} is all zeros, cannot L2-normalise '
          f'({zero.size} zero rows)')
    out.append((emb / norm).astype(np.float32))
  return np.concatenate(out, axis=1)


def build_sids(
    rng_key: chex.PRNGKey, embeddings: np.ndarray,
    config: SidBuildConfig = SidBuildConfig(),
) -> tuple[np.ndarray, dict[str, Any]]:
  """Unique SIDs of a catalogue by residual k-means.

  Args:
    rng_key: typed key, consumed (k-means++ seeding).
    embeddings: [N, D] finite float item embeddings (cast to float32).
    config: levels, codebook size, iterations, balance, collision method.

  Returns:
    codes [N, L'] int32, one unique SID per row (L' = L, or L + 1 with
    'extra_level'), and JSON-ready stats: config, num_items, embedding_dim,
    per-level `kmeans` stats, `collisions` (the method's report),
    `before_resolution` / `after_resolution` (`stats.sid_stats`), `trie`
    (prefixes per level, device bytes) and `timings_s` (kmeans,
    collisions, trie, stats).

  Raises:
    EmbeddingsError: embeddings not a finite float [N, D] array.
    CollisionError: 'reassign' meets a parent prefix with more than V items.
  """
  rkmeans.check_embeddings(embeddings)
  embeddings = np.asarray(embeddings, np.float32)
  timings = {}
  start = time.perf_counter()
  raw_codes, codebooks, kmeans_stats = rkmeans.residual_kmeans(
      rng_key, embeddings, num_levels=config.num_levels,
      codebook_size=config.codebook_size, num_iters=config.num_iters,
      balanced=config.balanced)
  timings['kmeans'] = time.perf_counter() - start

  start = time.perf_counter()
  sizes = [config.codebook_size] * config.num_levels
  if config.collisions == 'reassign':
    last = config.num_levels - 1
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
  before = stats.sid_stats(raw_codes, config.codebook_size)
  after = stats.sid_stats(codes, sizes)
  timings['stats'] = time.perf_counter() - start
  return codes, {
      'config': dataclasses.asdict(config),
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
