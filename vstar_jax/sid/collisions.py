"""Collision resolution: give every item a unique SID (host numpy).

Two methods, both deterministic and both keeping the prefix tree valid:
- `resolve_by_reassignment`: the last level is re-assigned inside each parent
  prefix, so L stays fixed ("zero-collision reassignment").
- `resolve_by_extra_level`: TIGER's extra level, the item's rank inside its
  collision group, so L grows by one.
"""
from typing import Any

import numpy as np

from vstar_jax.sid import errors
from vstar_jax.sid import prefixes
from vstar_jax.sid import stats

METHODS = ('reassign', 'extra_level')


def _sq_dists(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
  """[M, D] x [V, D] -> [M, V] squared distances in float64."""
  x = x.astype(np.float64)
  centers = centers.astype(np.float64)
  return ((x * x).sum(1)[:, None] - 2. * x @ centers.T
          + (centers * centers).sum(1)[None, :])


def resolve_by_reassignment(
    codes: np.ndarray, last_residuals: np.ndarray, last_codebook: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
  """Moves colliding items to the nearest unused last-level codes.

  In each group of items sharing a full SID the item nearest to the group's
  last-level centre (then the lowest index) keeps it. The others, in index
  order, each take the nearest last-level code not yet used under their
  parent prefix (levels 0..L-2), by distance of their last-level residual to
  the codebook centres. Prefixes of length L-1 never change.

  Args:
    codes: [N, L] int codes, L >= 1.
    last_residuals: [N, D] float, what the last level quantised
      (`rkmeans.level_residuals(..., level=L-1)`).
    last_codebook: [V, D] float last-level centres.

  Returns:
    codes [N, L] int32 with unique rows, and stats: method, `before` and
    `after` (`stats.collision_summary`), num_moved.

  Raises:
    CollisionError: a parent prefix holds more than V items.
  """
  prefixes.check_codes(codes)
  num_items, num_levels = codes.shape
  num_codes = last_codebook.shape[0]
  if last_residuals.shape != (num_items, last_codebook.shape[1]):
    raise errors.CollisionError(
        f'reassign: last_residuals has shape {last_residuals.shape}, expected'
        f' {(num_items, last_codebook.shape[1])}')
  if codes[:, -1].max() >= num_codes:
    raise errors.CollisionError(
        f'reassign: last-level code {codes[:, -1].max()} >= codebook size '
        f'{num_codes}')
  ids = prefixes.prefix_ids(codes)
  parent, sid = ids[:, num_levels - 1], ids[:, num_levels]
  parent_sizes = np.bincount(parent)
  if parent_sizes.max() > num_codes:
    first = np.flatnonzero(parent == parent_sizes.argmax())[0]
    raise errors.CollisionError(
        f'reassign: {parent_sizes.max()} items share the prefix '
        f'{codes[first, :-1].tolist()} but the last level has only '
        f'{num_codes} codes; use the extra_level method')

  last = codes[:, -1]
  own_sq = np.sum((last_residuals.astype(np.float64)
                   - last_codebook[last].astype(np.float64)) ** 2, axis=1)
  order = np.lexsort((np.arange(num_items), own_sq, sid))
  keeps = np.ones(num_items, bool)
  keeps[1:] = sid[order][1:] != sid[order][:-1]
  is_mover = np.empty(num_items, bool)
  is_mover[order] = ~keeps

  new_last = last.astype(np.int32)
  movers = np.flatnonzero(is_mover)
  by_parent = np.argsort(parent, kind='stable')  # index order per parent
  starts = np.concatenate([[0], np.cumsum(parent_sizes)])
  # Python loops over colliding parents and their movers only.
  for p in np.unique(parent[movers]):
    members = by_parent[starts[p]:starts[p + 1]]
    used = np.zeros(num_codes, bool)
    used[last[members[~is_mover[members]]]] = True
    group_movers = members[is_mover[members]]
    dists = _sq_dists(last_residuals[group_movers], last_codebook)
    for row, item in enumerate(group_movers):
      code = int(np.argmin(np.where(used, np.inf, dists[row])))
      used[code] = True
      new_last[item] = code
  new_codes = np.concatenate(
      [codes[:, :-1].astype(np.int32), new_last[:, None]], axis=1)
  return new_codes, {
      'method': 'reassign',
      'before': stats.collision_summary(codes),
      'after': stats.collision_summary(new_codes),
      'num_moved': int(movers.size),
  }


def resolve_by_extra_level(
    codes: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
  """Appends TIGER's disambiguation level: rank within the collision group.

  Args:
    codes: [N, L] int codes.

  Returns:
    codes [N, L + 1] int32 (the new last code is the item's rank, by index,
    among items with the same SID; 0 for non-colliding items), and stats:
    method, `before`, `after`, num_moved (0: no code changes), and
    extra_level_vocab_size (the largest group, at least 1).
  """
  prefixes.check_codes(codes)
  num_items = codes.shape[0]
  sid = prefixes.prefix_ids(codes)[:, -1]
  order = np.argsort(sid, kind='stable')
  sizes = np.bincount(sid)
  starts = np.cumsum(sizes) - sizes
  rank = np.empty(num_items, np.int32)
  rank[order] = np.arange(num_items) - starts[sid[order]]
  new_codes = np.concatenate(
      [codes.astype(np.int32), rank[:, None]], axis=1)
  return new_codes, {
      'method': 'extra_level',
      'before': stats.collision_summary(codes),
      'after': stats.collision_summary(new_codes),
      'num_moved': 0,
      'extra_level_vocab_size': int(max(sizes.max(), 1)),
  }
