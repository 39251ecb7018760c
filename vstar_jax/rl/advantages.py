"""GRPO and Sibling-GRPO advantages (spec section 7, Eq. 15-18).

Written for one prompt and vmapped over prompts, so groups never mix prompts.
The sibling reducer works on [G, G] prefix-equality matrices with masks (no
dynamic shapes). Shapes: G candidates, L levels.
"""
import chex
import jax
import jax.numpy as jnp

EPS = 1e-4


def _masked_mean_std(x, mask):
  n = jnp.maximum(mask.sum(), 1)
  mean = jnp.where(mask, x, 0.).sum() / n
  var = jnp.where(mask, (x - mean) ** 2, 0.).sum() / n
  # Rewards carry no gradient, so sqrt at 0 (a constant group) is safe.
  return mean, jnp.sqrt(var)


def grpo_advantages(rewards, mask):
  """(R_i - mean R) / (std R + 1e-4) over the group. _unbatched_: [G]."""
  chex.assert_rank([rewards, mask], 1)
  chex.assert_type([rewards, mask], [float, bool])
  mean, std = _masked_mean_std(rewards, mask)
  return jnp.where(mask, (rewards - mean) / (std + EPS), 0.)


def sibling_advantages(codes, rewards, mask, min_std: float = 0.0):
  """Per-depth sibling advantages. _unbatched_.

  For depth l, candidates sharing the length-(l-1) prefix h form a sibling
  group; its distinct l-th tokens v are the sibling nodes, each scored by
  the mean reward R_bar(h, v) of the candidates through it, and
  A_node(h, v) = (R_bar(h, v) - mean_S R_bar) / (std_S R_bar + 1e-4) with the
  population std over the distinct siblings; a parent with one child gives 0.
  So does a sibling set whose std is below `min_std`: rank penalties differ
  by ~0.01 between siblings, and dividing by std + 1e-4 would turn that
  noise into advantages of about +/-1 (0: no floor, the paper's rule).

  Args:
    codes: [G, L] candidate SIDs.
    rewards: [G] policy rewards.
    mask: [G] valid candidates.
    min_std: floor on the sibling set's std (static).

  Returns:
    (adv [G, L]: A_node of the node candidate i passes at depth l,
     rep [G, L] bool: True on one representative candidate per distinct node,
     so that summing rep * A * ratio counts each node once (Eq. 19).)
  """
  chex.assert_rank([codes, rewards, mask], [2, 1, 1])
  chex.assert_type([codes, rewards, mask], [int, float, bool])
  num, num_levels = codes.shape
  pair = mask[:, None] & mask[None, :]
  earlier = jnp.tril(jnp.ones((num, num), bool), k=-1)   # j < i
  advs, reps = [], []
  for level in range(1, num_levels + 1):
    same_parent = jnp.all(codes[:, None, :level - 1] ==
                          codes[None, :, :level - 1], -1) & pair
    same_node = jnp.all(codes[:, None, :level] == codes[None, :, :level],
                        -1) & pair
    node_mean = (same_node @ rewards) / jnp.maximum(same_node.sum(1), 1)
    rep = mask & ~jnp.any(same_node & earlier, axis=1)
    sib = same_parent & rep[None, :]                   # distinct siblings
    n_sib = sib.sum(1)
    denom = jnp.maximum(n_sib, 1)
    sib_mean = (sib @ node_mean) / denom
    dev = node_mean[None, :] - sib_mean[:, None]
    sib_std = jnp.sqrt(jnp.where(sib, dev ** 2, 0.).sum(1) / denom)
    adv = (node_mean - sib_mean) / (sib_std + EPS)
    informative = (n_sib > 1) & (sib_std >= min_std)
    advs.append(jnp.where(mask & informative, adv, 0.))
    reps.append(rep)
  return jnp.stack(advs, 1), jnp.stack(reps, 1)


batched_grpo_advantages = jax.vmap(grpo_advantages)
batched_sibling_advantages = jax.vmap(sibling_advantages)
