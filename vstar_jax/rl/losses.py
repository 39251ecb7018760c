"""Policy and value losses, rlax style: one prompt, vmapped by callers.

Shapes: G candidates, L SID levels. Token log-probs are under the
trie-constrained policy; the "old" log-probs are the rollout policy's.
"""
import chex
import jax
import jax.numpy as jnp


def clipped_surrogate(logp, logp_old, adv, mask, clip_eps: float):
  """min(ratio * A, clip(ratio) * A) per token. _unbatched_: [G, L] each.

  Returns [G, L] (0 where masked); ratio = exp(logp - stopgrad(logp_old)).
  """
  chex.assert_equal_shape([logp, logp_old, adv, mask])
  log_ratio = logp - jax.lax.stop_gradient(logp_old)
  ratio = jnp.exp(jnp.where(mask, log_ratio, 0.))   # masked: ratio 1, no NaN
  adv = jax.lax.stop_gradient(adv)
  clipped = jnp.clip(ratio, 1. - clip_eps, 1. + clip_eps)
  return jnp.where(mask, jnp.minimum(ratio * adv, clipped * adv), 0.)


def k3_kl(logp, logp_ref, mask):
  """k3 estimator of KL(pi || pi_ref) per token, >= 0. _unbatched_ [G, L].

  exp(ref - logp) - (ref - logp) - 1, evaluated on samples from pi.
  """
  diff = jnp.where(mask, jax.lax.stop_gradient(logp_ref) - logp, 0.)
  return jnp.where(mask, jnp.exp(diff) - diff - 1., 0.)


def value_td_loss(values, targets, mask):
  """Mean squared TD error. values, targets [G, L+1]; mask [G]. _unbatched_."""
  chex.assert_equal_shape([values, targets])
  err = (values - jax.lax.stop_gradient(targets)) ** 2
  w = jnp.broadcast_to(mask[:, None], err.shape).astype(jnp.float32)
  return (err * w).sum() / jnp.maximum(w.sum(), 1.)
