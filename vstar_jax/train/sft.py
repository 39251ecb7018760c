"""Supervised fine-tuning: teacher-forced cross-entropy on the target's SID.

Every training window (history -> next item) is one example; the loss is the
sum over the L levels of -log pi(y_l | x, y_<l), where pi is the
trie-constrained (renormalised) policy, so no capacity goes into pushing down
codes that can never be decoded. With label smoothing eps the target of
each level is (1 - eps) on the true code plus eps spread uniformly over the
codes the loss normalises over (the trie-valid ones when constrained), so no
smoothing mass lands on codes that can never be decoded. Padding rows
(example_mask False) carry no weight.

Shapes: B batch, T history, L levels, V codes.
"""
import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from vstar_jax.models import policy
from vstar_jax.sid import trie as trie_lib
from vstar_jax.train import state as state_lib


def target_valid_masks(trie, targets: jax.Array) -> jax.Array:
  """Valid-code masks along each target's own path. [B] -> [B, L, V]."""
  prefixes = jnp.take(trie.item_prefix_idx, targets, axis=0)   # [B, L]
  return jnp.stack(
      [trie_lib.valid_next_mask(trie, level, prefixes[:, level])
       for level in range(trie.num_levels)], axis=1)


def token_nll(logp: jax.Array, target_codes: jax.Array, valid: jax.Array,
              label_smoothing: float) -> jax.Array:
  """Per-token cross-entropy against the (smoothed) target distribution.

  Args:
    logp: [B, L, V] log-probs, -inf where `valid` is False.
    target_codes: [B, L] int32 true codes (valid ones).
    valid: [B, L, V] bool, the codes logp is normalised over.
    label_smoothing: eps in [0, 1); 0 is the plain negative log-likelihood.

  Returns:
    [B, L] float32 -((1 - eps) log p(y) + eps mean_{valid c} log p(c)).
  """
  nll = -jnp.take_along_axis(logp, target_codes[..., None], -1)[..., 0]
  if not label_smoothing:
    return nll
  num_valid = jnp.maximum(valid.sum(-1), 1)
  mean_logp = jnp.where(valid, logp, 0.).sum(-1) / num_valid
  return (1. - label_smoothing) * nll - label_smoothing * mean_logp


def sft_loss(params, batch, trie, rng_key, *, net: policy.PolicyValueNet,
             constrained: bool, label_smoothing: float = 0.0,
             train: bool = True):
  """Mean per-example SID cross-entropy (the NLL without label smoothing).

  Args:
    params: policy/value parameters.
    batch: dict with history [B, T] int32, history_mask [B, T] bool,
      target [B] int32, example_mask [B] bool.
    trie: the catalogue's PrefixTrie.
    rng_key: dropout key (consumed).
    net: the network module (static).
    constrained: renormalise over trie-valid codes.
    label_smoothing: eps of `token_nll` (static).
    train: enables dropout.

  Returns:
    (loss, metrics dict of scalars).
  """
  chex.assert_rank([batch['history'], batch['target']], [2, 1])
  history_codes = jnp.take(trie.codes, jnp.maximum(batch['history'], 0),
                           axis=0)
  target_codes = jnp.take(trie.codes, batch['target'], axis=0)
  logits, _ = net.apply(
      {'params': params}, history_codes, batch['history_mask'], target_codes,
      deterministic=not train, with_value=False,
      history_items=batch['history'], rngs={'dropout': rng_key})
  if constrained:
    valid = target_valid_masks(trie, batch['target'])
  else:
    valid = jnp.ones(logits.shape, bool)
  logp = policy.masked_log_softmax(logits, valid)
  weight = batch['example_mask'].astype(jnp.float32)
  denom = jnp.maximum(weight.sum(), 1.0)
  mean_over_examples = lambda tok: (tok.sum(-1) * weight).sum() / denom
  loss = mean_over_examples(
      token_nll(logp, target_codes, valid, label_smoothing))
  correct = (jnp.argmax(logp, -1) == target_codes)
  metrics = {'loss': loss, 'examples': weight.sum()}
  if label_smoothing:    # the loss is the smoothed CE; log the NLL too
    metrics['nll'] = mean_over_examples(
        token_nll(logp, target_codes, valid, 0.0))
  for level in range(trie.num_levels):
    metrics[f'acc_l{level + 1}'] = (correct[:, level] * weight).sum() / denom
  return loss, metrics


def make_sft_step(net: policy.PolicyValueNet, *, constrained: bool = True,
                  label_smoothing: float = 0.0) -> Callable:
  """Returns sft_step(state, batch, trie, base_key) -> (state, metrics).

  The caller jits it (donating the state). The dropout key is
  fold_in(base_key, state.step), so a resumed run replays the same keys.
  """
  loss_fn = functools.partial(sft_loss, net=net, constrained=constrained,
                              label_smoothing=label_smoothing)

  def sft_step(state: state_lib.TrainState, batch, trie, base_key):
    rng_key = jax.random.fold_in(base_key, state.step)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        state.params, batch, trie, rng_key)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return state.apply_gradients(grads), metrics

  return sft_step
