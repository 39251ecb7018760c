"""Full-catalogue ranking and diversity metrics, on host numpy.

A ranked list comes from the whole catalogue (no sampled negatives): by
constrained beam search for SID models, by exact top-K for ID models.
Invalid or dead entries are -1 and can never be hits; SIDs are unique, so an
item can only match its own target.

Shapes: M users, K list length, L SID levels.
"""
from typing import Optional, Sequence

import numpy as np

DEFAULT_CUTOFFS = (1, 3, 5, 10, 20)


def target_ranks(items: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """0-based rank of each target in its list, K when absent.

  Args:
    items: [M, K] int item indices, best first, -1 for empty slots.
    targets: [M] int item indices (>= 0).

  Returns:
    [M] int ranks in [0, K].
  """
  items = np.asarray(items)
  targets = np.asarray(targets)
  if items.ndim != 2 or targets.shape != items.shape[:1]:
    raise ValueError(f'items {items.shape} and targets {targets.shape} '
                     'must be [M, K] and [M]')
  if (targets < 0).any():
    raise ValueError('targets must be valid item indices (>= 0)')
  hits = items == targets[:, None]
  return np.where(hits.any(1), hits.argmax(1), items.shape[1])


def hit_ndcg(ranks: np.ndarray, list_len: int,
             cutoffs: Sequence[int] = DEFAULT_CUTOFFS) -> dict[str, float]:
  """HR@k = 1[rank < k] and NDCG@k = 1[rank < k] / log2(rank + 2), means.

  Args:
    ranks: [M] 0-based target ranks (list_len = absent).
    list_len: K, the length of the ranked lists; a cutoff above it would
      silently undercount, so it is an error.
    cutoffs: the k values.
  """
  out = {}
  for k in cutoffs:
    if k > list_len:
      raise ValueError(f'cutoff @{k} exceeds the ranked list length '
                       f'{list_len}; raise the beam width')
    hit, ndcg = per_user_hit_ndcg(ranks, k)
    out[f'hr@{k}'] = float(hit.mean())
    out[f'ndcg@{k}'] = float(ndcg.mean())
  return out


def per_user_hit_ndcg(ranks: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """HR@k and NDCG@k of each row: ([M] float64, [M] float64).

  Their means are hit_ndcg's values; paired tests compare them row by row.
  """
  hit = np.asarray(ranks) < k
  return (hit.astype(np.float64),
          np.where(hit, 1.0 / np.log2(np.asarray(ranks) + 2.0), 0.0))


def long_tail_items(train_counts: np.ndarray,
                    head_fraction: float = 0.2) -> np.ndarray:
  """Bool [N]: items outside the `head_fraction` most popular (by count)."""
  num_items = len(train_counts)
  num_head = int(np.ceil(head_fraction * num_items))
  order = np.argsort(-np.asarray(train_counts), kind='stable')
  tail = np.ones(num_items, bool)
  tail[order[:num_head]] = False
  return tail


def diversity(items: np.ndarray, item_codes: Optional[np.ndarray],
              long_tail_mask: np.ndarray, top: int = 10) -> dict[str, float]:
  """Diversity of the top-`top` lists.

  Args:
    items: [M, K] ranked items, -1 for empty slots.
    item_codes: [N, L] SID codes of the catalogue, or None (an ID-based
      model on a dataset without SIDs: no prefix metrics).
    long_tail_mask: [N] bool, True = long-tail item.
    top: the list prefix measured.

  Returns:
    coverage (distinct recommended items / N), long-tail share of the
    recommended slots, and (with item_codes) the mean number of distinct
    level-1 and level-2 prefixes per list.
  """
  lists = np.asarray(items)[:, :top]
  valid = lists >= 0
  safe = np.maximum(lists, 0)
  num_items = len(long_tail_mask)
  out = {
      f'coverage@{top}': float(np.unique(lists[valid]).size / num_items),
      f'long_tail_share@{top}': float(
          long_tail_mask[safe][valid].mean() if valid.any() else 0.0),
  }
  for depth in (1, 2):
    if item_codes is None or depth > item_codes.shape[1]:
      continue
    prefixes = item_codes[safe][..., :depth]          # [M, top, depth]
    key = np.zeros(lists.shape, np.int64)
    for level in range(depth):
      key = key * (int(item_codes[:, level].max()) + 1) + prefixes[..., level]
    key = np.sort(np.where(valid, key, -1), axis=1)
    new = np.concatenate(
        [np.ones_like(key[:, :1], bool), key[:, 1:] != key[:, :-1]], axis=1)
    distinct = (new & (key >= 0)).sum(1)
    out[f'distinct_l{depth}@{top}'] = float(distinct.mean())
  return out
