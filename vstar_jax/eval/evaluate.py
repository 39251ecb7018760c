"""Full-catalogue evaluation by constrained beam search.

Users are scored in fixed-size batches (the last one padded and masked) so the
jitted search compiles once; only the [B, K] item lists come back to the host.

Shapes: M users, B batch, T history, K beam width.
"""
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from vstar_jax import parallel
from vstar_jax.decoding import beam
from vstar_jax.eval import history_rule
from vstar_jax.eval import ranking


def make_rank_fn(net, *, beam_width: int, constrained: bool = True,
                 exclude_history: bool = False) -> Callable:
  """rank(params, trie, history [B, T], history_mask [B, T]) -> BeamResult.

  With exclude_history (eval/history_rule.py), the beam's K items that are
  in the row's history are dropped, the rest keep their order and the list
  ends in empty slots (-1). Returns an un-jitted function; callers jit it
  once.
  """
  def rank(params, trie, history, history_mask):
    res = beam.beam_search(net, params, trie, history, history_mask,
                           beam_width=beam_width, constrained=constrained)
    if not exclude_history:
      return res
    items, scores, codes = history_rule.drop_history_items(
        res.items, res.scores, history, history_mask, res.codes)
    return beam.BeamResult(items=items, codes=codes, scores=scores)
  return rank


def rank_all(rank_fn: Callable, params, trie, history: np.ndarray,
             history_mask: np.ndarray, *, batch_size: int,
             input_sharding: Optional[jax.sharding.Sharding] = None
             ) -> tuple[np.ndarray, np.ndarray]:
  """Ranked items and scores for every row. -> ([M, K] int, [M, K] float).

  With `input_sharding`, each batch becomes a global array of that sharding
  (every process holds all rows; rank_fn must return replicated results).
  """
  num = len(history)
  items, scores = [], []
  for start in range(0, num, batch_size):
    h = history[start:start + batch_size]
    m = history_mask[start:start + batch_size]
    pad = batch_size - len(h)
    if pad:
      h = np.concatenate([h, np.zeros((pad,) + h.shape[1:], h.dtype)])
      m = np.concatenate([m, np.zeros((pad,) + m.shape[1:], bool)])
    if input_sharding is None:
      h, m = jax.device_put((h, m))
    else:
      h, m = parallel.host_to_global((h, m), input_sharding)
    with jax.transfer_guard('disallow'):
      res = rank_fn(params, trie, h, m)
    items.append(res.items)
    scores.append(res.scores)
  # One transfer at the end, not one sync per batch.
  items, scores = jax.device_get((items, scores))
  return (np.concatenate(items)[:num], np.concatenate(scores)[:num])


def evaluate(*args, **kwargs) -> dict[str, float]:
  """HR/NDCG@cutoffs (+ diversity): evaluate_ranks without the ranks."""
  return evaluate_ranks(*args, **kwargs)[0]


def evaluate_ranks(rank_fn: Callable, params, trie, history: np.ndarray,
                   history_mask: np.ndarray, targets: np.ndarray, *,
                   batch_size: int, list_len: int,
                   item_codes: Optional[np.ndarray],
                   long_tail_mask: Optional[np.ndarray] = None,
                   cutoffs: Sequence[int] = ranking.DEFAULT_CUTOFFS,
                   input_sharding: Optional[jax.sharding.Sharding] = None
                   ) -> tuple[dict[str, float], np.ndarray]:
  """Metrics and the per-row target ranks they are computed from.

  Args:
    rank_fn: jitted rank function (see make_rank_fn).
    params: network parameters.
    trie: PrefixTrie.
    history: [M, T] int32; history_mask: [M, T] bool; targets: [M] int32.
    batch_size: users per jitted call.
    list_len: K, the beam width (cutoffs above it are an error).
    item_codes: [N, L] SIDs, for prefix diversity (None: not measured).
    long_tail_mask: [N] bool; when given, diversity metrics are added.
    cutoffs: HR/NDCG cut-offs.
    input_sharding: see rank_all.

  Returns:
    (metrics, ranks [M] int: 0-based target position, K when absent).
  """
  items, _ = rank_all(rank_fn, params, trie, history, history_mask,
                      batch_size=batch_size, input_sharding=input_sharding)
  ranks = ranking.target_ranks(items, targets)
  metrics = ranking.hit_ndcg(ranks, list_len,
                             [k for k in cutoffs if k <= list_len])
  if long_tail_mask is not None:
    metrics.update(ranking.diversity(items, item_codes, long_tail_mask))
  metrics['users'] = float(len(targets))
  return metrics, ranks
