"""One jitted V-STAR update: rollout -> rewards -> advantages -> K optimizer
steps on the policy and value losses together (spec sections 6-8).

From one prompt up:
  * `group_signal`: one prompt's rewards, GRPO and sibling advantages and
    dense value rewards, from its rollout group (no parameters involved);
  * `group_loss`: one prompt's scalar loss from its teacher-forced token
    log-probs and values and that signal (rlax style: unbatched, with chex
    contracts, vmapped over prompts);
  * `rl_loss`: teacher forcing of the batch's groups, the vmapped group
    loss and its mean over real prompts;
  * `make_rl_step`: the rollout, then K = `updates_per_rollout` optimizer
    steps on that one batch in a `lax.scan`.

Candidates are re-scored by teacher forcing over their fixed [B, G, L] codes
(the history is encoded once per prompt and the G candidates are decoded as
G beams), so the rollout itself carries no gradient. The behaviour ("old")
log-probs are those of the parameters that made the rollout: the first
update reads them from its own forward pass under stop_gradient (ratio
exactly 1, gradient of log-prob: one-update-per-rollout GRPO), and later
updates reuse them, so the ratio and `clip_eps` act from the second update.

Shapes: B prompts, G candidates, L levels, V codes, N items, D embedding,
K updates per rollout.
"""
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import optax

from vstar_jax.decoding import types
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


@chex.dataclass(frozen=True)
class GroupSignal:
  """What one prompt's rollout group teaches; fixed over its K updates."""
  reward: chex.Array   # [G] float32 policy reward R
  adv: chex.Array      # [G] float32 GRPO advantage
  sib_adv: chex.Array  # [G, L] float32 sibling advantage of the depth-l node
  sib_rep: chex.Array  # [G, L] bool, one representative per distinct node
  dense: chex.Array    # [G, L] float32 dense prefix rewards (value targets)


@chex.dataclass(frozen=True)
class GroupLossParts:
  """One prompt's loss terms, as diagnostics read them."""
  j_grpo: chex.Array      # [] GRPO objective per token
  j_sib: chex.Array       # [] sibling objective per candidate
  kl: chex.Array          # [] k3 KL to the reference per token
  value_loss: chex.Array  # [] TD loss
  ratio: chex.Array       # [G, L] pi / pi_old per token (no gradient)


def value_param_label(params) -> dict:
  """'value' for the value head's parameters, 'policy' for the rest."""
  return {k: jax.tree_util.tree_map(
      lambda _, k=k: 'value' if k.startswith('value_') else 'policy', v)
          for k, v in params.items()}


def group_signal(items, codes, logp, mask, target, target_codes, item_emb,
                 *, cfg: RLConfig) -> GroupSignal:
  """Rewards and advantages of one prompt's group. _unbatched_.

  Args:
    items: [G] int32 candidate items (-1 where masked).
    codes: [G, L] int32 their SIDs.
    logp: [G] float32 rollout log-probs (the ranking reward's order).
    mask: [G] bool, real candidates.
    target: [] int32 the user's next item.
    target_codes: [L] int32 its SID.
    item_emb: [N, D] float32 item embeddings (dense rewards).
    cfg: static settings.

  Returns:
    GroupSignal of this prompt.
  """
  chex.assert_rank([items, codes, logp, mask, target, target_codes, item_emb],
                   [1, 2, 1, 1, 0, 1, 2])
  chex.assert_type([items, codes, logp, mask, target],
                   [int, int, float, bool, int])
  reward = rewards_lib.group_reward(cfg.reward, items, codes, logp, mask,
                                    target, target_codes)
  sib_adv, sib_rep = advantages.sibling_advantages(
      codes, reward, mask, cfg.sibling_min_std)
  dense = rewards_lib.dense_step_rewards(
      codes, mask, jnp.take(item_emb, jnp.maximum(items, 0), axis=0),
      jnp.take(item_emb, target, axis=0), target_codes,
      jnp.asarray(cfg.step_weights, jnp.float32))
  return GroupSignal(reward=reward,
                     adv=advantages.grpo_advantages(reward, mask),
                     sib_adv=sib_adv, sib_rep=sib_rep, dense=dense)


def group_loss(logp, logp_old, logp_ref, values, signal: GroupSignal, mask,
               policy_on, *, cfg: RLConfig):
  """-(w J_GRPO + alpha J_sib - beta KL) * policy_on + c_V L_V. _unbatched_.

  Args:
    logp: [G, L] float32 token log-probs under the current policy.
    logp_old: [G, L] float32 under the behaviour policy (no gradient).
    logp_ref: [G, L] float32 under the frozen reference (no gradient).
    values: [G, L+1] float32 V(s_0..s_L) along each candidate's path.
    signal: this prompt's GroupSignal.
    mask: [G] bool, real candidates (|C(x)| = mask.sum()).
    policy_on: [] float32, 0 or 1; 0 drops the policy terms (value warm-up).
    cfg: static settings.

  Returns:
    (loss [] float32, GroupLossParts).
  """
  chex.assert_rank([logp, logp_old, logp_ref, values, mask, policy_on],
                   [2, 2, 2, 2, 1, 0])
  chex.assert_type([logp, logp_old, logp_ref, values, mask, policy_on],
                   [float, float, float, float, bool, float])
  chex.assert_equal_shape([logp, logp_old, logp_ref, signal.sib_adv,
                           signal.dense])
  num, num_levels = logp.shape
  chex.assert_shape([values], (num, num_levels + 1))
  chex.assert_shape([mask, signal.adv], (num,))
  tok_mask = jnp.broadcast_to(mask[:, None], logp.shape)
  grpo = losses.clipped_surrogate(
      logp, logp_old, jnp.broadcast_to(signal.adv[:, None], logp.shape),
      tok_mask, cfg.clip_eps)
  sib = losses.clipped_surrogate(logp, logp_old, signal.sib_adv,
                                 tok_mask & signal.sib_rep, cfg.clip_eps)
  kl = losses.k3_kl(logp, logp_ref, tok_mask)
  group = jnp.maximum(mask.sum(), 1).astype(jnp.float32)   # |C(x)|
  j_grpo = grpo.sum() / (group * num_levels)
  j_sib = sib.sum() / group
  kl_tok = kl.sum() / (group * num_levels)
  td = jax.vmap(rewards_lib.td_targets, (0, 0, None))(
      signal.dense, values, cfg.gamma)
  value_loss = losses.value_td_loss(values, td, mask)
  loss = (-(cfg.grpo_weight * j_grpo + cfg.sibling_alpha * j_sib -
            cfg.kl_beta * kl_tok) * policy_on + cfg.value_coef * value_loss)
  ratio = jax.lax.stop_gradient(
      losses.importance_ratio(logp, logp_old, tok_mask))
  return loss, GroupLossParts(j_grpo=j_grpo, j_sib=j_sib, kl=kl_tok,
                              value_loss=value_loss, ratio=ratio)


def _teacher_forced(net, params, trie, history, history_mask, codes,
                    with_value=True):
  """Constrained token log-probs [B, G, L], values [B, G, L+1], entropy.

  Values are None with `with_value=False` (the frozen reference policy).
  """
  batch, g, num_levels = codes.shape
  hist_codes = jnp.take(trie.codes, jnp.maximum(history, 0), axis=0)
  variables = {'params': params}
  context = net.apply(variables, hist_codes, history_mask,
                      with_value=with_value, history_items=history,
                      method=net.encode_history)
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


def learning_signal(net, ref_params, batch, cands: types.Candidates, trie,
                    item_emb, *, cfg: RLConfig):
  """What a rollout teaches, computed once for its K updates.

  Args:
    net: the policy/value network (static).
    ref_params: the frozen reference policy's parameters.
    batch: 'history' [B, T], 'history_mask' [B, T], 'target' [B].
    cands: the rollout's Candidates, [B, G] fields.
    trie: PrefixTrie.
    item_emb: [N, D] float32 item embeddings.
    cfg: static settings.

  Returns:
    (GroupSignal with [B, ...] fields, reference token log-probs
    [B, G, L] float32).
  """
  target = batch['target']
  signal = jax.vmap(functools.partial(group_signal, cfg=cfg),
                    (0, 0, 0, 0, 0, 0, None))(
                        cands.items, cands.codes, cands.logp, cands.mask,
                        target, jnp.take(trie.codes, target, axis=0),
                        item_emb)
  logp_ref, _, _ = _teacher_forced(
      net, jax.lax.stop_gradient(ref_params), trie, batch['history'],
      batch['history_mask'], cands.codes, with_value=False)
  return signal, logp_ref


def rl_loss(params, batch, cands: types.Candidates, signal: GroupSignal,
            logp_ref, logp_old, on_policy, policy_on, trie, *, net,
            cfg: RLConfig):
  """Mean `group_loss` over the batch's real prompts.

  Args:
    params: the parameters being trained (differentiated).
    batch: 'history' [B, T] int32, 'history_mask' [B, T] bool,
      'example_mask' [B] bool (padding prompts weigh 0).
    cands: the rollout's Candidates, [B, G] fields.
    signal: GroupSignal with [B, ...] fields.
    logp_ref: [B, G, L] float32 token log-probs of the reference.
    logp_old: [B, G, L] float32 behaviour log-probs; unread if on_policy.
    on_policy: [] bool, True when `params` made the rollout: the behaviour
      log-probs are then this pass's own under stop_gradient (ratio
      exactly 1, no second forward pass).
    policy_on: [] float32, 0 or 1 (see group_loss).
    trie: PrefixTrie.
    net: the policy/value network (static).
    cfg: static settings.

  Returns:
    (loss [], (metrics dict of scalars, the behaviour log-probs used
    [B, G, L])).
  """
  chex.assert_rank([cands.codes, logp_ref, logp_old, on_policy], [3, 3, 3, 0])
  logp, values, entropy = _teacher_forced(
      net, params, trie, batch['history'], batch['history_mask'],
      cands.codes)
  logp_old = jnp.where(on_policy, jax.lax.stop_gradient(logp), logp_old)
  per_prompt, parts = jax.vmap(
      functools.partial(group_loss, cfg=cfg), (0, 0, 0, 0, 0, 0, None))(
          logp, logp_old, logp_ref, values, signal, cands.mask, policy_on)
  weight = batch['example_mask'].astype(jnp.float32)      # [B]
  loss = (per_prompt * weight).sum() / jnp.maximum(weight.sum(), 1.)
  metrics = diagnostics.loss_stats(parts, cands.mask, weight, entropy,
                                   values, cfg.clip_eps)
  metrics['loss'] = loss
  return loss, (metrics, logp_old)


def make_rl_step(net: policy.PolicyValueNet,
                 rollout_cfg: rollout_lib.RolloutConfig, cfg: RLConfig):
  """rl_step(state, ref_params, batch, trie, item_emb, base_key).

  Returns (state, metrics). One call is one rollout and K =
  cfg.updates_per_rollout optimizer updates on it (a `lax.scan`), so
  `state.step` counts rollouts and the optimizer's own count advances by K.
  Metrics are means over the K updates (rollout statistics are per call;
  VED rollouts add `diagnostics.ved_tree_stats` as 'ved/...': how well V,
  log-prob and log-prob + w V rank the target among the tree's complete
  leaves, on prompts the update has not yet seen).
  The caller jits it (donating the state); the rollout key is
  fold_in(base_key, state.step), so resume replays exactly.
  """
  loss_grad = jax.grad(functools.partial(rl_loss, net=net, cfg=cfg),
                       has_aux=True)

  def rl_step(state, ref_params, batch, trie, item_emb, base_key):
    key = jax.random.fold_in(base_key, state.step)
    cands, rollout_stats = rollout_lib.rollout_with_stats(
        net, state.params, trie, key, batch['history'],
        batch['history_mask'], batch['target'], cfg=rollout_cfg)
    signal, logp_ref = learning_signal(net, ref_params, batch, cands, trie,
                                       item_emb, cfg=cfg)
    policy_on = (state.step >= cfg.value_warmup_steps).astype(jnp.float32)

    def update(carry, index):
      params, opt_state, logp_old = carry
      grads, (metrics, logp_old) = loss_grad(
          params, batch, cands, signal, logp_ref, logp_old, index == 0,
          policy_on, trie)
      metrics['grad_norm'] = optax.tree.norm(grads)
      updates, opt_state = state.tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state, logp_old), metrics

    (params, opt_state, _), metrics = jax.lax.scan(
        update, (state.params, state.opt_state, jnp.zeros_like(logp_ref)),
        jnp.arange(cfg.updates_per_rollout))
    metrics = jax.tree_util.tree_map(lambda m: m.mean(0), metrics)
    metrics.update(diagnostics.group_stats(cands, signal.reward, signal.adv,
                                           batch['target']))
    metrics['sib_adv_std'] = diagnostics.sibling_adv_std(
        signal.sib_adv, signal.sib_rep, cands.mask)
    metrics['policy_on'] = policy_on
    metrics.update(rollout_stats)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  return rl_step
