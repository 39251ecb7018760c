"""Descriptive statistics of any SID table [N, L] (ours or precomputed)."""
from collections.abc import Sequence
from typing import Any

import numpy as np

from vstar_jax.data import sid_index
from vstar_jax.sid import prefixes


def _summary(values: np.ndarray) -> dict[str, float]:
  p50, p90 = np.percentile(values, [50, 90])
  return {'min': int(values.min()), 'mean': float(values.mean()),
          'max': int(values.max()), 'p50': float(p50), 'p90': float(p90)}


def collision_summary(codes: np.ndarray) -> dict[str, Any]:
  """Collisions of codes [N, L].

  Returns:
    unique_sids; colliding_items (items whose SID another item shares);
    collision_rate = (N - unique_sids) / N (LC-Rec's definition);
    colliding_item_rate = colliding_items / N; max_items_per_sid.
  """
  return _collisions(prefixes.prefix_ids(codes)[:, -1])


def _collisions(sid_ids: np.ndarray) -> dict[str, Any]:
  sizes = prefixes.group_sizes(sid_ids)
  num_items = sid_ids.shape[0]
  unique = int(sid_ids.max()) + 1
  colliding = int(np.sum(sizes > 1))
  return {'unique_sids': unique, 'colliding_items': colliding,
          'collision_rate': (num_items - unique) / num_items,
          'colliding_item_rate': colliding / num_items,
          'max_items_per_sid': int(sizes.max())}


def sid_stats(codes: np.ndarray,
              codebook_size: int | Sequence[int] | None = None,
              ) -> dict[str, Any]:
  """Usage, collisions and prefix-tree shape of codes [N, L].

  Args:
    codes: [N, L] non-negative int codes.
    codebook_size: V per level (an int for all levels); None infers
      max code + 1 per level (then `codebook_size_inferred` is True).

  Returns:
    A JSON-ready dict: num_items, num_levels, `levels` (per level
    distinct_tokens, codebook_size, usage = distinct / size), the
    `collision_summary` fields, and `depths`: for depth d = 0..L the number of
    distinct length-d prefixes, items per prefix (min/mean/max/p50/p90) and,
    for d < L, children (distinct next codes) per prefix, whose max is the
    largest sibling group.
  """
  ids = prefixes.prefix_ids(codes)
  num_items, num_levels = codes.shape
  inferred = codebook_size is None
  if inferred:
    sizes = list(sid_index.codebook_sizes(codes))
  elif isinstance(codebook_size, int):
    sizes = [codebook_size] * num_levels
  else:
    sizes = [int(s) for s in codebook_size]
    if len(sizes) != num_levels:
      raise ValueError(
          f'codebook_size has {len(sizes)} entries for {num_levels} levels')
  levels = []
  for level, size in enumerate(sizes):
    distinct = int(np.unique(codes[:, level]).size)
    levels.append({'level': level, 'distinct_tokens': distinct,
                   'codebook_size': size, 'usage': distinct / size})
  depths = []
  for depth in range(num_levels + 1):
    items = np.bincount(ids[:, depth])
    entry = {'depth': depth, 'num_prefixes': int(items.size),
             'items_per_prefix': _summary(items)}
    if depth < num_levels:
      # Each child prefix counted once, at the id of its parent.
      _, first = np.unique(ids[:, depth + 1], return_index=True)
      children = np.bincount(ids[first, depth], minlength=items.size)
      entry['children_per_prefix'] = _summary(children)
    depths.append(entry)
  return {'num_items': num_items, 'num_levels': num_levels,
          'codebook_size_inferred': inferred, 'levels': levels,
          **_collisions(ids[:, -1]), 'depths': depths}
