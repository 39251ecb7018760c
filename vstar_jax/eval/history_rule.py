"""The one rule, for every model, on items already in the user's history.

config.eval.exclude_history picks it (launch/configs/common.py):

- False (the default; the TIGER / LC-Rec / RecBole-sequential protocol): the
  ranked list is over the full catalogue and may hold history items.
- True: items of the user's history never appear in the list. An ID model
  sets their scores to -inf before its top-K (`mask_history_scores`); a SID
  model drops them from its beam's K items, keeps the order of the rest and
  pads the tail with empty slots (`drop_history_items`), so its list can be
  shorter than K.

"The history" is the model's input window: the last config.data.max_history
items before the target (history_mask True), the same for both families.

Both functions are pure and jittable with static shapes.
Shapes: B users, T history, N items, K list length.
"""
import chex
import jax
import jax.numpy as jnp


def describe(exclude_history: bool) -> str:
  """The rule in words, for results.json and the printed tables."""
  if exclude_history:
    return ('items already in the history (the model input window) are '
            'EXCLUDED from the ranked list')
  return 'items already in the history are NOT masked'


def in_history(items: jax.Array, history: jax.Array,
               history_mask: jax.Array) -> jax.Array:
  """[B, K] bool: items[b, k] is a real item of row b's history.

  Args:
    items: [B, K] int32 item indices (-1 = empty slot, never in history).
    history: [B, T] int32; history_mask: [B, T] bool.
  """
  chex.assert_rank([items, history, history_mask], 2)
  chex.assert_equal_shape([history, history_mask])
  same = items[:, :, None] == history[:, None, :]          # [B, K, T]
  return (same & history_mask[:, None, :]).any(-1) & (items >= 0)


def mask_history_scores(scores: jax.Array, history: jax.Array,
                        history_mask: jax.Array) -> jax.Array:
  """Scores with every history item's set to -inf. [B, N] -> [B, N].

  Padded history columns scatter out of range and are dropped.
  """
  chex.assert_rank([scores, history, history_mask], 2)
  num_items = scores.shape[1]
  rows = jnp.arange(scores.shape[0])[:, None]               # [B, 1]
  cols = jnp.where(history_mask, history, num_items)        # [B, T]
  return scores.at[rows, cols].set(-jnp.inf, mode='drop')


def drop_history_items(items: jax.Array, scores: jax.Array,
                       history: jax.Array, history_mask: jax.Array,
                       *extra: jax.Array):
  """Removes history items from ranked lists, keeping the others' order.

  Args:
    items: [B, K] int32, best first, -1 = empty slot.
    scores: [B, K] float32.
    history, history_mask: [B, T].
    *extra: arrays [B, K, ...] reordered with the items (e.g. SID codes).

  Returns:
    (items, scores, *extra), each [B, K]: the kept entries first in their
    original order, then empty slots (item -1, score -inf; extra entries of
    empty slots are the dropped ones' and meaningless).
  """
  chex.assert_equal_shape([items, scores])
  keep = (items >= 0) & ~in_history(items, history, history_mask)
  # Stable: kept slots first in their order, the dropped ones after.
  order = jnp.argsort(~keep, axis=1, stable=True)
  kept = jnp.take_along_axis(keep, order, axis=1)
  new_items = jnp.where(kept, jnp.take_along_axis(items, order, axis=1), -1)
  new_scores = jnp.where(kept, jnp.take_along_axis(scores, order, axis=1),
                         -jnp.inf)
  moved = tuple(
      jnp.take_along_axis(x, order.reshape(order.shape + (1,) *
                                           (x.ndim - 2)), axis=1)
      for x in extra)
  return (new_items, new_scores) + moved
