"""Statistics of candidate groups: what RL can learn from a rollout.

Used by the RL step's logs and the rollout benchmark (`launch.benchmark
--suite=ved`). Jittable; shapes: B prompts, G candidates, L levels, N items.
The RL step's loss metrics are read from the same per-prompt values the loss
is made of (rl.step.GroupLossParts), not recomputed.
"""
import jax
import jax.numpy as jnp

from vstar_jax.decoding.ved import search


def _distinct_per_row(keys, valid):
  """Number of distinct valid keys per row. [B, G] -> [B]."""
  k = jnp.sort(jnp.where(valid, keys, -1), axis=1)
  new = jnp.concatenate([jnp.ones_like(k[:, :1], bool),
                         k[:, 1:] != k[:, :-1]], axis=1)
  return (new & (k >= 0)).sum(1)


def group_stats(cands, reward, adv, target, long_tail_mask=None):
  """Per-batch means of group statistics.

  Args:
    cands: types.Candidates with [B, G] fields.
    reward: [B, G] policy rewards.
    adv: [B, G] GRPO advantages.
    target: [B] target items.
    long_tail_mask: optional [N] bool, True = long-tail item.

  Returns:
    Dict of scalars: target_in_group, reward (mean), reward_std (mean
    within-group population std), zero_adv_frac (groups whose advantages are
    all zero), grpo_adv_std, unique_items, distinct_l1, distinct_l2 (per
    group), rollout_cost, and long_tail_share when a mask is given.
  """
  mask = cands.mask
  n_g = jnp.maximum(mask.sum(1), 1)
  hit = (cands.items == target[:, None]) & mask
  mean_r = jnp.where(mask, reward, 0.).sum(1) / n_g
  std_r = jnp.sqrt(jnp.where(mask, (reward - mean_r[:, None]) ** 2, 0.
                             ).sum(1) / n_g)
  n = jnp.maximum(mask.sum(), 1)
  codes = cands.codes
  num_levels = codes.shape[-1]
  vocab = jnp.maximum(codes.max() + 1, 1)
  out = {
      'target_in_group': hit.any(1).mean(),
      'reward': jnp.where(mask, reward, 0.).sum() / n,
      'reward_std': std_r.mean(),
      'zero_adv_frac': jnp.all(jnp.where(mask, adv == 0, True), 1).mean(),
      'grpo_adv_std': jnp.sqrt(jnp.where(mask, adv ** 2, 0.).sum() / n),
      'unique_items': _distinct_per_row(cands.items, mask).mean(),
      'distinct_l1': _distinct_per_row(codes[..., 0], mask).mean(),
      'rollout_cost': cands.cost.mean(),
  }
  if num_levels >= 2:
    out['distinct_l2'] = _distinct_per_row(
        codes[..., 0] * vocab + codes[..., 1], mask).mean()
  if long_tail_mask is not None:
    tail = jnp.take(long_tail_mask, jnp.maximum(cands.items, 0)) & mask
    out['long_tail_share'] = tail.sum() / n
  return out


def sibling_adv_std(sib_adv, sib_rep, mask):
  """Population std of the sibling advantages over distinct nodes.

  Args:
    sib_adv: [B, G, L] sibling advantages.
    sib_rep: [B, G, L] bool, one representative per distinct node.
    mask: [B, G] real candidates.

  Returns:
    [] float32.
  """
  nodes = sib_rep & mask[..., None]
  n = jnp.maximum(nodes.sum(), 1)
  mean = jnp.where(nodes, sib_adv, 0.).sum() / n
  return jnp.sqrt(jnp.where(nodes, (sib_adv - mean) ** 2, 0.).sum() / n)


def loss_stats(parts, mask, weight, entropy, values, clip_eps: float):
  """Means of one update's loss terms.

  Args:
    parts: rl.step.GroupLossParts with [B] scalars and ratio [B, G, L].
    mask: [B, G] real candidates.
    weight: [B] float32, 1 for real prompts, 0 for padding.
    entropy: [B, G, L] entropy of the constrained policy at each token.
    values: [B, G, L+1] values along the candidates' paths.
    clip_eps: the surrogate's clip range.

  Returns:
    Dict of scalars: kl and value_loss (means over real prompts), entropy
    (mean over real tokens), value_root (mean V(s_0)), clip_frac (share of
    real tokens whose ratio lies outside 1 +/- clip_eps, where the clip
    can stop the gradient; 0 on a rollout's first update) and ratio_dev
    (mean |ratio - 1| over real tokens).
  """
  tok_mask = jnp.broadcast_to(mask[..., None], entropy.shape)
  n_tok = jnp.maximum(tok_mask.sum(), 1)
  denom = jnp.maximum(weight.sum(), 1.)
  dev = jnp.abs(parts.ratio - 1.)
  return {
      'kl': (parts.kl * weight).sum() / denom,
      'value_loss': (parts.value_loss * weight).sum() / denom,
      'entropy': jnp.where(tok_mask, entropy, 0.).sum() / n_tok,
      'value_root': values[:, 0, 0].mean(),
      'clip_frac': (tok_mask & (dev > clip_eps)).sum() / n_tok,
      'ratio_dev': jnp.where(tok_mask, dev, 0.).sum() / n_tok,
  }


def _target_auc(score, ok, hit):
  """P(target scores above a non-target of the pool), ties 1/2. [P] -> []."""
  target = jnp.max(jnp.where(hit, score, -jnp.inf))
  others = ok & ~hit
  below = jnp.sum(others & (score < target)) + 0.5 * jnp.sum(
      others & (score == target))
  return below / jnp.maximum(others.sum(), 1)


def ved_tree_stats(tree, target, trie, cfg):
  """Where VED loses the target: the tree, or the choice of candidates.

  The pool is what VED ranks its candidates among (`search.leaf_pool`):
  the evaluated complete leaves, or, without leaf evaluation, every valid
  child of an evaluated depth-(L-1) node valued at its parent.

  Args:
    tree: the final decoding.ved.tree.DecodeTree with [B, N] node fields.
    target: [B] target items.
    trie: PrefixTrie.
    cfg: the search's VedConfig (G, leaf evaluation, ranking weight w).

  Returns:
    Dict of scalars (means over prompts): complete_leaves (pool size),
    target_in_tree (the target is in the pool), target_top_g_by_value /
    _by_logp / _by_mixed (it is among the G best of the pool by V, path
    log-prob, or log-prob + w * V), value_auc / logp_auc / mixed_auc (AUC of
    each score for the target against the rest of the pool, over prompts
    whose pool holds the target and something else; 0.5 = chance), and
    iterations (exploration loop iterations). The value and mixed entries
    are left out when the search evaluated no V for the pool
    (`VedConfig.evaluates_value_at`; set `diagnose_values` to get them).
  """
  num_levels, g = trie.num_levels, cfg.num_candidates
  items, logp, value, ok = jax.vmap(
      lambda t: search.leaf_pool(t, trie, cfg, num_levels))(tree)   # [B, P]
  hit = ok & (items == target[:, None])
  in_pool = hit.any(1)
  has_others = (ok & ~hit).any(1)
  scored = in_pool & has_others
  scores = {'logp': logp}
  pool_depth = num_levels if cfg.evaluate_leaves else num_levels - 1
  if cfg.evaluates_value_at(pool_depth, num_levels):
    scores.update(value=value, mixed=logp + cfg.rank_weight * value)
  out = {'complete_leaves': ok.sum(1).mean(), 'target_in_tree': in_pool.mean(),
         'iterations': tree.iterations.mean()}
  for name, score in scores.items():
    score = jnp.where(ok, score, -jnp.inf)
    target_score = jnp.max(jnp.where(hit, score, -jnp.inf), 1)
    better = (score > target_score[:, None]).sum(1)
    out[f'target_top_g_by_{name}'] = (in_pool & (better < g)).mean()
    auc = jax.vmap(_target_auc)(score, ok, hit)
    out[f'{name}_auc'] = jnp.sum(jnp.where(scored, auc, 0.)) / jnp.maximum(
        scored.sum(), 1)
  return out
