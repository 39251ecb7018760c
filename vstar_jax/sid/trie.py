"""Device-side prefix trie of a catalogue's SIDs as fixed-shape tables.

Level l has a table `children[l]` [P_l, V] int32: row p is the length-l prefix
with id p (P_0 = 1, the root), column c a code; the entry is the id of the
length-(l+1) prefix (at the last level: the item index), or INVALID_IDX (-1).
A gather therefore gives the valid-next-code mask of any batch of prefixes
inside jit, O(batch x V), with no host round-trip.

The last level may instead be a `SparseLevel` (CSR: the children of each
depth-(L-1) prefix as one sorted run of a flat code array, found by a
per-parent offset + count). It answers the same `valid_next_mask` /
`next_prefix` calls in fixed shapes and costs O(N) bytes instead of
O(P_{L-1} x V): for 1M random items at L=4, V=256, ~12 MiB instead of 0.95 GiB.
`build_trie(..., last_level=)` chooses; 'auto' (the default) picks sparse when
the dense last table would exceed `AUTO_SPARSE_BYTES` (256 MiB). Below that
the dense table is small and its single gather is the cheapest lookup.

There is no unconstrained fallback: an invalid prefix (the INVALID_IDX
sentinel, or an id out of range) has an all-False mask and maps to
INVALID_IDX. Decoders must treat an all-False row as a dead beam (its logits
all finfo.min, never a uniform or unmasked distribution). `check_prefixes`
raises DeadPrefixError eagerly; `checked_valid_next_mask` carries a
`checkify.debug_check` that raises under `jax.experimental.checkify`.
"""
from typing import ClassVar

import chex
import flax.struct
import jax
import jax.numpy as jnp
from jax.experimental import checkify
import numpy as np

from vstar_jax.sid import errors
from vstar_jax.sid import prefixes


# 'auto' stores the last level sparse above this many dense-table bytes.
AUTO_SPARSE_BYTES = 256 * 2 ** 20
# A sparse mask compares each of K slots with all V codes (O(K V) per prefix,
# fastest for the few children of a typical last level); above this K it
# scatters the slots instead (O(K + V)).
_MAX_CHILDREN_COMPARED = 16


@flax.struct.dataclass
class SparseLevel:
  """One trie level in CSR form; stands for a dense [P, V] children table.

  The children of parent p are entries offsets[p] .. offsets[p + 1] - 1 of
  `codes` (ascending) and `targets` (the child's id: at the last level the
  item index). E = number of edges (N at the last level).
  """
  offsets: chex.Array  # [P + 1] int32, non-decreasing, offsets[0] = 0
  codes: chex.Array  # [E] int32, sorted within each parent's run
  targets: chex.Array  # [E] int32
  vocab_size: int = flax.struct.field(pytree_node=False)
  max_children: int = flax.struct.field(pytree_node=False)  # K, static

  @property
  def shape(self) -> tuple[int, int]:
    """(P, V) of the dense table this level stands for."""
    return (self.offsets.shape[0] - 1, self.vocab_size)

  @property
  def nbytes(self) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(self))


@flax.struct.dataclass
class PrefixTrie:
  """SID prefix trie; sizes are read from shapes (static under jit)."""
  # L tables, level l: [P_l, V] int32, or (last level only) a SparseLevel.
  children: tuple[chex.Array | SparseLevel, ...]
  item_prefix_idx: chex.Array  # [N, L] int32, prefix id at depth 0..L-1
  codes: chex.Array  # [N, L] int32, each item's SID

  ROOT_IDX: ClassVar[int] = 0
  INVALID_IDX: ClassVar[int] = -1

  @property
  def num_levels(self) -> int:
    return len(self.children)

  @property
  def vocab_size(self) -> int:
    return self.children[0].shape[1]

  @property
  def num_items(self) -> int:
    return self.codes.shape[0]

  @property
  def num_prefixes(self) -> tuple[int, ...]:
    """P_l for l = 0..L-1 (P_0 = 1)."""
    return tuple(table.shape[0] for table in self.children)

  @property
  def nbytes(self) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(self))


def build_trie(codes: np.ndarray, *, vocab_size: int | None = None,
               last_level: str = 'auto') -> PrefixTrie:
  """Builds the trie on host (vectorised numpy) and puts it on device.

  Args:
    codes: [N, L] non-negative int codes, one unique SID per item.
    vocab_size: V, table width; None uses max code + 1.
    last_level: 'dense' ([P_{L-1}, V] table), 'sparse' (`SparseLevel`) or
      'auto': sparse iff the dense table would exceed AUTO_SPARSE_BYTES.

  Returns:
    The PrefixTrie on the default device.

  Raises:
    CodesError: codes of the wrong rank or dtype, or negative.
    TrieError: duplicate SIDs (naming the first colliding items), a code
      >= vocab_size, or an unknown last_level.
  """
  if last_level not in ('dense', 'sparse', 'auto'):
    raise errors.TrieError(
        f"last_level must be 'dense', 'sparse' or 'auto', got {last_level!r}")
  ids = prefixes.prefix_ids(codes)
  num_items, num_levels = codes.shape
  sizes = prefixes.group_sizes(ids[:, -1])
  if sizes.max() > 1:
    first = int(np.argmax(sizes > 1))
    group = np.flatnonzero(ids[:, -1] == ids[first, -1])
    raise errors.TrieError(
        f'SIDs must be unique: items {group[:5].tolist()} share SID '
        f'{codes[first].tolist()} ({int(np.sum(sizes > 1))} items in '
        'colliding SIDs); resolve collisions first')
  max_code = int(codes.max())
  vocab_size = max_code + 1 if vocab_size is None else vocab_size
  if max_code >= vocab_size:
    item, level = np.argwhere(codes >= vocab_size)[0]
    raise errors.TrieError(
        f'item {item} has code {codes[item, level]} at level {level}, '
        f'>= vocab_size {vocab_size}')
  children = []
  for level in range(num_levels):
    parent = ids[:, level]
    target = (ids[:, level + 1] if level < num_levels - 1
              else np.arange(num_items, dtype=np.int32))
    num_parents = int(parent.max()) + 1
    dense_bytes = num_parents * vocab_size * np.dtype(np.int32).itemsize
    if level == num_levels - 1 and (
        last_level == 'sparse' or
        (last_level == 'auto' and dense_bytes > AUTO_SPARSE_BYTES)):
      children.append(_sparse_level(parent, codes[:, level], target,
                                    num_parents, vocab_size))
    else:
      table = np.full((num_parents, vocab_size), -1, np.int32)
      table[parent, codes[:, level]] = target
      children.append(table)
  return jax.device_put(PrefixTrie(
      children=tuple(children),
      item_prefix_idx=np.ascontiguousarray(ids[:, :num_levels]),
      codes=codes.astype(np.int32)))


def _sparse_level(parent: np.ndarray, code: np.ndarray, target: np.ndarray,
                  num_parents: int, vocab_size: int) -> SparseLevel:
  """CSR level of edges (parent, code) -> target, given as [E] arrays."""
  order = np.lexsort((code, parent))  # by parent, then code
  counts = np.bincount(parent, minlength=num_parents)
  offsets = np.zeros(num_parents + 1, np.int32)
  np.cumsum(counts, out=offsets[1:])
  return SparseLevel(
      offsets=offsets, codes=code[order].astype(np.int32),
      targets=target[order].astype(np.int32), vocab_size=vocab_size,
      max_children=int(counts.max()))


def _sparse_runs(level: SparseLevel, prefix_idx: chex.Array,
                 ) -> tuple[chex.Array, chex.Array]:
  """(start, count) of each prefix's run; count 0 for invalid prefixes."""
  in_range = (prefix_idx >= 0) & (prefix_idx < level.shape[0])
  safe = jnp.where(in_range, prefix_idx, 0)
  start = level.offsets[safe]
  count = jnp.where(in_range, level.offsets[safe + 1] - start, 0)
  return start, count


def _sparse_valid_next_mask(level: SparseLevel,
                            prefix_idx: chex.Array) -> chex.Array:
  """[...] prefix ids -> [..., V] bool from each run's <= K codes."""
  start, count = _sparse_runs(level, prefix_idx)
  slot = jnp.arange(level.max_children, dtype=jnp.int32).reshape(
      (1,) * prefix_idx.ndim + (-1,))                          # [1.., K]
  edge = jnp.minimum(start[..., None] + slot, level.codes.shape[0] - 1)
  # Slots past the run get code V, which matches no column.
  code = jnp.where(slot < count[..., None], level.codes[edge],
                   level.vocab_size)                          # [..., K]
  if level.max_children <= _MAX_CHILDREN_COMPARED:
    columns = jnp.arange(level.vocab_size).reshape((1,) * code.ndim + (-1,))
    return jnp.any(code[..., None] == columns, axis=-2)
  flat = code.reshape(-1, level.max_children)
  mask = jnp.zeros((flat.shape[0], level.vocab_size), bool).at[
      jnp.arange(flat.shape[0])[:, None], flat].set(True, mode='drop')
  return mask.reshape(prefix_idx.shape + (level.vocab_size,))


def _sparse_next_prefix(level: SparseLevel, prefix_idx: chex.Array,
                        code: chex.Array) -> chex.Array:
  """Child id of (prefix, code) by a fixed-step binary search in the run."""
  start, count = _sparse_runs(level, prefix_idx)
  last_edge = level.codes.shape[0] - 1
  lo, hi = start, start + count   # first edge in [lo, hi) with code >= code
  for _ in range(level.max_children.bit_length()):  # halves a run of <= K
    mid = (lo + hi) // 2
    active = lo < hi
    right = level.codes[jnp.minimum(mid, last_edge)] < code
    lo = jnp.where(active & right, mid + 1, lo)
    hi = jnp.where(active & ~right, mid, hi)
  edge = jnp.minimum(lo, last_edge)
  found = (lo < start + count) & (level.codes[edge] == code)
  return jnp.where(found, level.targets[edge], PrefixTrie.INVALID_IDX)


def _rows(table: chex.Array, prefix_idx: chex.Array) -> chex.Array:
  """table[prefix_idx] [..., V]; all INVALID_IDX for invalid prefixes."""
  prefix_idx = jnp.asarray(prefix_idx, jnp.int32)
  in_range = (prefix_idx >= 0) & (prefix_idx < table.shape[0])
  rows = table[jnp.where(in_range, prefix_idx, 0)]
  return jnp.where(in_range[..., None], rows, PrefixTrie.INVALID_IDX)


def valid_next_mask(trie: PrefixTrie, level: int,
                    prefix_idx: chex.Array) -> chex.Array:
  """Valid next codes of length-`level` prefixes. Jittable.

  Args:
    trie: the catalogue trie.
    level: static int, 0..L-1 (0: the root, prefix_idx 0).
    prefix_idx: [...] int32 prefix ids; -1 (or out of range) = no prefix.

  Returns:
    [..., V] bool, True = valid code. All False for invalid prefixes: the
    caller must treat such rows as dead beams.
  """
  table = trie.children[level]
  if isinstance(table, SparseLevel):
    return _sparse_valid_next_mask(table, jnp.asarray(prefix_idx, jnp.int32))
  return _rows(table, prefix_idx) >= 0


def next_prefix(trie: PrefixTrie, level: int, prefix_idx: chex.Array,
                code: chex.Array) -> chex.Array:
  """Id of prefix + code (at the last level: the item index). Jittable.

  Args:
    trie: the catalogue trie.
    level: static int, 0..L-1.
    prefix_idx: [...] int32 length-`level` prefix ids.
    code: [...] int32 codes, same shape.

  Returns:
    [...] int32 length-(level+1) prefix ids (item indices at level L-1),
    INVALID_IDX where the prefix is invalid or the code not a continuation.
  """
  prefix_idx = jnp.asarray(prefix_idx, jnp.int32)
  code = jnp.asarray(code, jnp.int32)
  chex.assert_equal_shape([prefix_idx, code])
  table = trie.children[level]
  if isinstance(table, SparseLevel):
    return _sparse_next_prefix(table, prefix_idx, code)
  ok = ((prefix_idx >= 0) & (prefix_idx < table.shape[0])
        & (code >= 0) & (code < table.shape[1]))
  child = table[jnp.where(ok, prefix_idx, 0), jnp.where(ok, code, 0)]
  return jnp.where(ok, child, PrefixTrie.INVALID_IDX)


def valid_mask_any_level(trie: PrefixTrie, level: jax.Array,
                         prefix: jax.Array) -> jax.Array:
  """`valid_next_mask` for traced depths; all False at depth L.

  level, prefix: [...] int32 (depth and length-`level` prefix id)
  -> [..., V] bool.
  """
  masks = [valid_next_mask(trie, l, jnp.where(level == l, prefix, -1))
           for l in range(trie.num_levels)]
  return jnp.any(jnp.stack(masks), axis=0)


def next_prefix_any_level(trie: PrefixTrie, level: jax.Array,
                          prefix: jax.Array, code: jax.Array) -> jax.Array:
  """`next_prefix` for traced levels (item at the last level).

  level, prefix, code: [...] int32 -> [...] int32, INVALID_IDX where
  `level` is out of 0..L-1 or the step leaves the trie.
  """
  out = jnp.full(prefix.shape, -1, jnp.int32)
  for l in range(trie.num_levels):
    out = jnp.where(level == l, next_prefix(trie, l, prefix, code), out)
  return out


def walk_prefixes(trie: PrefixTrie, codes: chex.Array) -> chex.Array:
  """Prefix ids along code paths. Jittable (Python loop over static L).

  Args:
    trie: the catalogue trie.
    codes: [..., L] int32 code paths.

  Returns:
    [..., L + 1] int32: depth 0 (root, 0) to depth L (the item index);
    INVALID_IDX from the first code that leaves the trie onwards.
  """
  chex.assert_axis_dimension(codes, -1, trie.num_levels)
  prefix = jnp.zeros(codes.shape[:-1], jnp.int32)
  path = [prefix]
  for level in range(trie.num_levels):
    prefix = next_prefix(trie, level, prefix, codes[..., level])
    path.append(prefix)
  return jnp.stack(path, axis=-1)


def lookup_item(trie: PrefixTrie, codes: chex.Array) -> chex.Array:
  """Item index of each code path. codes: [..., L] int32.

  Returns:
    [...] int32 item indices, INVALID_IDX where the path is not an item.
  """
  return walk_prefixes(trie, codes)[..., -1]


def checked_valid_next_mask(
    trie: PrefixTrie, level: int, prefix_idx: chex.Array,
    prefix_mask: chex.Array | None = None) -> chex.Array:
  """`valid_next_mask` plus a checkify check that live prefixes continue.

  Without `checkify.checkify` the check is dropped (no cost); under it, a
  live prefix with an all-False mask makes `err.throw()` raise.

  Args:
    trie: the catalogue trie.
    level: static int, 0..L-1.
    prefix_idx: [...] int32 prefix ids.
    prefix_mask: [...] bool, True = live beam that must have a continuation;
      None: all live.

  Returns:
    [..., V] bool mask, as `valid_next_mask`.
  """
  mask = valid_next_mask(trie, level, prefix_idx)
  dead = ~jnp.any(mask, axis=-1)
  if prefix_mask is not None:
    chex.assert_equal_shape([dead, prefix_mask])
    dead = dead & prefix_mask
  flat_dead = dead.reshape(-1)
  first = jnp.argmax(flat_dead)
  checkify.debug_check(
      ~jnp.any(flat_dead),
      f'trie level {level}: prefix_idx (flat position {{}}) = {{}} has no '
      'valid continuation; decoders must treat it as a dead beam',
      first, jnp.asarray(prefix_idx, jnp.int32).reshape(-1)[first])
  return mask


def check_prefixes(trie: PrefixTrie, level: int, prefix_idx: chex.Array,
                   prefix_mask: chex.Array | None = None) -> None:
  """Eager (not under jit) check that live prefixes have a continuation.

  Args:
    trie: the catalogue trie.
    level: int, 0..L-1.
    prefix_idx: [...] int32 prefix ids (numpy or a concrete jax.Array).
    prefix_mask: [...] bool, True = live; None: all live.

  Raises:
    DeadPrefixError: naming the first dead live prefix and the count.
  """
  if not isinstance(prefix_idx, jax.Array):
    prefix_idx = jax.device_put(np.asarray(prefix_idx, np.int32))
  has_child = jnp.any(valid_next_mask(trie, level, prefix_idx), axis=-1)
  dead = ~np.asarray(jax.device_get(has_child))
  if prefix_mask is not None:
    prefix_mask = np.asarray(jax.device_get(prefix_mask), bool)
    if prefix_mask.shape != dead.shape:
      raise ValueError(f'prefix_mask shape {prefix_mask.shape} != prefix_idx '
                       f'shape {dead.shape}')
    dead &= prefix_mask
  if dead.any():
    position = tuple(int(i) for i in np.argwhere(dead)[0])
    value = int(jax.device_get(prefix_idx)[position])
    raise errors.DeadPrefixError(
        f'trie level {level}: prefix_idx{list(position)} = {value} has no '
        f'valid continuation ({int(dead.sum())} dead prefixes); decoders '
        'must treat such rows as dead beams')
