"""One jitted V-STAR update: rollout -> rewards -> advantages -> losses ->
one optax update of policy and value together (spec sections 6-8).

Candidates are re-scored by teacher forcing over their fixed [B, G, L] codes
(the history is encoded once per prompt and the G candidates are decoded as
G beams), so the rollout itself carries no gradient. The rollout policy is
the current policy, so the "old" log-probs are the current ones under
stop_gradient (ratio 1, gradient of log-prob), as in one-update-per-rollout
GRPO.

Shapes: B prompts, G candidates, L levels, V codes, N items, D embedding.
"""
import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import advantages
from vstar_jax.rl import diagnostics
from vstar_jax.rl import losses
from vstar_jax.rl import rewards as rewards_lib
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.sid import trie as trie_lib


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """Static objective settings (built by vstar_jax.config.rl_config)."""
  reward: str                        # 'ranking' | 'exact' | 'prefix'
  grpo_weight: float                 # weight of J_GRPO
  sibling_alpha: float               # alpha of J_sib (0: plain GRPO)
  sibling_min_std: float             # sibling groups below this std: no J_sib
  clip_eps: float
  updates_per_rollout: int           # K optimizer steps per rollout batch
  kl_beta: float
  value_coef: float                  # c_V (0: no value training)
  gamma: float
  step_weights: tuple[float, ...]    # w_l, one per level
  value_warmup_steps: int            # first steps train the value head only


def value_param_label(params) -> dict:
  """'value' for the value head's parameters, 'policy' for the rest."""
  return {k: jax.tree_util.tree_map(
      lambda _, k=k: 'value' if k.startswith('value_') else 'policy', v)
          for k, v in params.items()}


def _teacher_forced(net, params, trie, history, history_mask, codes,
                    with_value=True):
  """Constrained token log-probs [B, G, L], values [B, G, L+1], entropy.

  Values are None with `with_value=False` (the frozen reference policy).
  """
  batch, g, num_levels = codes.shape
  hist_codes = jnp.take(trie.codes, jnp.maximum(history, 0), axis=0)
  variables = {'params': params}
  context = net.apply(variables, hist_codes, history_mask,
                      with_value=with_value, method=net.encode_history)
  tokens = jnp.concatenate([jnp.zeros((batch, g, 1), jnp.int32), codes], -1)
  depths = jnp.broadcast_to(jnp.arange(num_levels + 1), tokens.shape)
  out = net.apply(variables, context, tokens, depths,
                  policy.empty_path(net.cfg, batch, g, num_levels + 1,
                                    context.k.dtype, with_value),
                  head_level='position', method=net.decode)
  prefixes = trie_lib.walk_prefixes(trie, codes)          # [B, G, L+1]
  valid = jnp.stack([trie_lib.valid_next_mask(trie, l, prefixes[..., l])
                     for l in range(num_levels)], axis=2)  # [B, G, L, V]
  logp_all = policy.masked_log_softmax(out.logits[:, :, :num_levels], valid)
  logp = jnp.take_along_axis(logp_all, codes[..., None], -1)[..., 0]
  entropy = search.restricted_entropy(logp_all)           # [B, G, L]
  return logp, out.value, entropy


def rl_loss(params, ref_params, batch, cands, item_emb, trie, policy_on, *,
            net, cfg: RLConfig):
  """-(J_GRPO + alpha J_sib - beta KL) + c_V L_V for one batch of groups.

  `policy_on` ([] float, 0 or 1) switches the policy objective off during
  the value warm-up (the optimiser also holds the policy's learning rate at
  0 then), without a second trace.
  """
  chex.assert_rank(cands.codes, 3)
  mask = cands.mask                                       # [B, G]
  target = batch['target']
  weight = batch['example_mask'].astype(jnp.float32)      # [B]
  target_codes = jnp.take(trie.codes, target, axis=0)     # [B, L]
  reward = jax.vmap(_reward_fn(cfg.reward))(
      cands.items, cands.codes, cands.logp, mask, target, target_codes)
  adv = advantages.batched_grpo_advantages(reward, mask)
  sib_adv, sib_rep = advantages.batched_sibling_advantages(
      cands.codes, reward, mask)

  logp, values, entropy = _teacher_forced(
      net, params, trie, batch['history'], batch['history_mask'],
      cands.codes)
  ref_logp, _, _ = _teacher_forced(
      net, jax.lax.stop_gradient(ref_params), trie, batch['history'],
      batch['history_mask'], cands.codes, with_value=False)
  num_levels = cands.codes.shape[-1]
  tok_mask = jnp.broadcast_to(mask[..., None], logp.shape)
  old = jax.lax.stop_gradient(logp)
  grpo = losses.clipped_surrogate(
      logp, old, jnp.broadcast_to(adv[..., None], logp.shape), tok_mask,
      cfg.clip_eps)
  sib = losses.clipped_surrogate(logp, old, sib_adv, tok_mask & sib_rep,
                                 cfg.clip_eps)
  kl = losses.k3_kl(logp, ref_logp, tok_mask)
  group = jnp.maximum(mask.sum(1), 1).astype(jnp.float32)  # |C(x)|
  j_grpo = grpo.sum((1, 2)) / (group * num_levels)
  j_sib = sib.sum((1, 2)) / group
  kl_tok = kl.sum((1, 2)) / (group * num_levels)

  cand_emb = jnp.take(item_emb, jnp.maximum(cands.items, 0), axis=0)
  target_emb = jnp.take(item_emb, target, axis=0)
  dense = jax.vmap(rewards_lib.dense_step_rewards, (0, 0, 0, 0, 0, None))(
      cands.codes, mask, cand_emb, target_emb, target_codes,
      jnp.asarray(cfg.step_weights, jnp.float32))
  td = jax.vmap(jax.vmap(rewards_lib.td_targets, (0, 0, None)),
                (0, 0, None))(dense, values, cfg.gamma)
  value_loss = jax.vmap(losses.value_td_loss)(values, td, mask)

  per_prompt = (-(cfg.grpo_weight * j_grpo + cfg.sibling_alpha * j_sib -
                  cfg.kl_beta * kl_tok) * policy_on +
                cfg.value_coef * value_loss)
  denom = jnp.maximum(weight.sum(), 1.)
  loss = (per_prompt * weight).sum() / denom
  metrics = diagnostics.group_stats(cands, reward, adv, target)
  sib_mask = sib_rep & mask[..., None]
  sib_n = jnp.maximum(sib_mask.sum(), 1)
  sib_mean = jnp.where(sib_mask, sib_adv, 0.).sum() / sib_n
  metrics['sib_adv_std'] = jnp.sqrt(jnp.where(
      sib_mask, (sib_adv - sib_mean) ** 2, 0.).sum() / sib_n)
  metrics.update(
      loss=loss, kl=(kl_tok * weight).sum() / denom,
      value_loss=(value_loss * weight).sum() / denom,
      entropy=jnp.where(tok_mask, entropy, 0.).sum() / jnp.maximum(
          tok_mask.sum(), 1),
      value_root=values[:, 0, 0].mean())
  return loss, metrics


def _reward_fn(kind: str) -> Callable:
  def fn(items, codes, logp, mask, target, target_codes):
    return rewards_lib.group_reward(kind, items, codes, logp, mask, target,
                                    target_codes)
  return fn


def make_rl_step(net: policy.PolicyValueNet,
                 rollout_cfg: rollout_lib.RolloutConfig, cfg: RLConfig):
  """rl_step(state, ref_params, batch, trie, item_emb, base_key).

  Returns (state, metrics). The caller jits it (donating the state); the
  rollout key is fold_in(base_key, state.step), so resume replays exactly.
  cfg.step_weights has one weight per SID level (vstar_jax.config checks it).
  """
  def rl_step(state, ref_params, batch, trie, item_emb, base_key):
    key = jax.random.fold_in(base_key, state.step)
    cands = rollout_lib.rollout(
        net, state.params, trie, key, batch['history'],
        batch['history_mask'], cfg=rollout_cfg)
    policy_on = (state.step >= cfg.value_warmup_steps).astype(jnp.float32)
    grads, metrics = jax.grad(rl_loss, has_aux=True)(
        state.params, ref_params, batch, cands, item_emb, trie, policy_on,
        net=net, cfg=cfg)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics['policy_on'] = policy_on
    return state.apply_gradients(grads), metrics

  return rl_step
