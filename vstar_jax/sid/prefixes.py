"""Vectorised prefix numbering of SID codes (host numpy, no Python loops
over items): the shared core of the trie builder, the stats and collision
resolution."""
import numpy as np

from vstar_jax.sid import errors


def check_codes(codes: np.ndarray, *, name: str = 'codes') -> None:
  """Raises CodesError unless codes is a non-negative int array [N, L]."""
  if not isinstance(codes, np.ndarray):
    raise errors.CodesError(
        f'{name}: expected a numpy array, got {type(codes).__name__}')
  if codes.ndim != 2 or 0 in codes.shape:
    raise errors.CodesError(
        f'{name}: expected a non-empty [N, L] array, got shape {codes.shape}')
  if not np.issubdtype(codes.dtype, np.integer):
    raise errors.CodesError(
        f'{name}: expected an integer array, got dtype {codes.dtype}')
  if codes.min() < 0:
    item, level = np.argwhere(codes < 0)[0]
    raise errors.CodesError(
        f'{name}: item {item} has negative code {codes[item, level]} at '
        f'level {level}')


def prefix_ids(codes: np.ndarray) -> np.ndarray:
  """Dense ids of every item's prefixes, numbered in lexicographic order.

  Args:
    codes: [N, L] non-negative int codes.

  Returns:
    [N, L + 1] int32: column d is the id of the item's length-d prefix among
    the distinct length-d prefixes (0..P_d - 1); column 0 is the root (0).
    Items with equal full SIDs share column L.
  """
  check_codes(codes)
  num_items, num_levels = codes.shape
  order = np.lexsort(codes.T[::-1])  # row-lexicographic, stable
  ordered = codes[order]
  changed = np.zeros(num_items - 1, bool)
  ids_sorted = np.zeros((num_items, num_levels + 1), np.int32)
  for depth in range(1, num_levels + 1):  # L is small: loop over levels only
    changed |= ordered[1:, depth - 1] != ordered[:-1, depth - 1]
    np.cumsum(changed, out=ids_sorted[1:, depth])
  ids = np.empty_like(ids_sorted)
  ids[order] = ids_sorted
  return ids


def group_sizes(ids: np.ndarray) -> np.ndarray:
  """Size of each item's group. ids: [N] dense ids. Returns [N] int64."""
  return np.bincount(ids)[ids]
