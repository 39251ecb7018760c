"""Rewards of a candidate group against the user's next item (spec section 6).

All functions are written for one prompt (_unbatched_) and vmapped by
callers. Shapes: G candidates, L SID levels, D embedding width.
"""
import chex
import jax
import jax.numpy as jnp

REWARD_KINDS = ('ranking', 'exact', 'prefix')


def _hits(items, mask, target):
  return mask & (items == target)


def ranking_reward(items, logp, mask, target):
  """MiniOneRec "ranking" reward. _unbatched_: items, logp, mask [G].

  1 for the target; if the target is in the group, each other candidate gets
  -a_r / S with a_r = 1 / log2(r + 2), r its 0-based rank in the group by
  rollout log-prob and S = sum_r a_r over all the group's ranks; 0 for all
  when the target is absent.
  """
  chex.assert_rank([items, logp, mask], 1)
  hit = _hits(items, mask, target)
  # Rank by log-prob among valid candidates (ties: lower index first).
  key = jnp.where(mask, logp, -jnp.inf)
  order = jnp.argsort(-key, stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  a = 1.0 / jnp.log2(rank.astype(jnp.float32) + 2.0)
  neg = mask & ~hit
  total = jnp.maximum(jnp.where(mask, a, 0.).sum(), 1e-12)
  penalty = jnp.where(neg & hit.any(), -a / total, 0.)
  return jnp.where(hit, 1.0, penalty)


def exact_reward(items, logp, mask, target):
  """1 for the target item, else 0. _unbatched_."""
  del logp
  return _hits(items, mask, target).astype(jnp.float32)


def prefix_reward(codes, mask, target_codes):
  """Partial credit: length of the common SID prefix / L. _unbatched_.

  codes [G, L], mask [G], target_codes [L].
  """
  chex.assert_rank([codes, target_codes], [2, 1])
  same = jnp.cumprod(codes == target_codes[None], axis=1)
  return jnp.where(mask, same.sum(1) / codes.shape[1], 0.).astype(
      jnp.float32)


def group_reward(kind: str, items, codes, logp, mask, target, target_codes):
  """The policy reward R of each candidate. _unbatched_ -> [G] float32."""
  if kind == 'ranking':
    return ranking_reward(items, logp, mask, target)
  if kind == 'exact':
    return exact_reward(items, logp, mask, target)
  if kind == 'prefix':
    return prefix_reward(codes, mask, target_codes)
  raise ValueError(f'unknown reward kind {kind!r}; expected {REWARD_KINDS}')


def dense_step_rewards(codes, mask, item_emb, target_emb, target_codes,
                       weights):
  """Dense per-prefix rewards for the value model. _unbatched_.

  r_l = w_l if y_<=l equals the target's prefix, else
  -w_l * (1 - cos(e_bar(y_<=l), e(target))), where e_bar is the mean
  embedding of the group's candidates sharing the prefix y_<=l.

  Args:
    codes: [G, L] candidate SIDs.
    mask: [G] valid candidates.
    item_emb: [G, D] candidates' item embeddings.
    target_emb: [D] the target's embedding.
    target_codes: [L] the target's SID.
    weights: [L] the w_l.

  Returns:
    [G, L] rewards of the prefixes of length 1..L (0 for invalid rows).
  """
  chex.assert_rank([codes, item_emb, target_emb], [2, 2, 1])
  num_levels = codes.shape[1]
  rewards = []
  for level in range(1, num_levels + 1):
    same = jnp.all(codes[:, None, :level] == codes[None, :, :level], -1)
    same = same & mask[:, None] & mask[None, :]
    e_bar = (same.astype(jnp.float32) @ item_emb) / jnp.maximum(
        same.sum(1, keepdims=True), 1)
    norm = jnp.linalg.norm(e_bar, axis=-1) * jnp.linalg.norm(target_emb)
    # Double-where: a zero mean embedding must not give NaN gradients.
    safe = jnp.where(norm > 0, norm, 1.)
    cos = jnp.where(norm > 0, e_bar @ target_emb / safe, 0.)
    match = jnp.all(codes[:, :level] == target_codes[None, :level], -1)
    w = weights[level - 1]
    rewards.append(jnp.where(match, w, -w * (1. - cos)))
  return jnp.where(mask[:, None], jnp.stack(rewards, 1), 0.)


def td_targets(rewards, values, gamma: float):
  """TD targets r_l + gamma * stopgrad V(s_{l+1}). _unbatched_.

  Args:
    rewards: [L] dense rewards of prefixes of length 1..L.
    values: [L + 1] V(s_0..s_L).
    gamma: discount.

  Returns:
    [L + 1] targets for V(s_0..s_L): s_0 (empty prefix, r_0 = 0) bootstraps
    from s_1; s_L is terminal (target r_L).
  """
  chex.assert_rank([rewards, values], 1)
  r = jnp.concatenate([jnp.zeros((1,), rewards.dtype), rewards])
  nxt = jnp.concatenate([jax.lax.stop_gradient(values[1:]),
                         jnp.zeros((1,), values.dtype)])
  return r + gamma * nxt
