"""Policy and value losses, rlax style: one prompt, vmapped by callers.

Every function here is _unbatched_: it sees one prompt's group of G
candidates over L SID levels and checks those ranks. Token log-probs are
under the trie-constrained policy; the "old" log-probs are the behaviour
(rollout-time) policy's.
"""
import chex
import jax
import jax.numpy as jnp


def importance_ratio(logp, logp_old, mask):
  """pi / pi_old per token, exp(logp - stopgrad(logp_old)). [G, L] each.

  Masked tokens get ratio 1 (their log-probs may be -inf: no NaN).
  """
  chex.assert_rank([logp, logp_old, mask], 2)
  chex.assert_equal_shape([logp, logp_old, mask])
  log_ratio = logp - jax.lax.stop_gradient(logp_old)
  return jnp.exp(jnp.where(mask, log_ratio, 0.))


def clipped_surrogate(logp, logp_old, adv, mask, clip_eps: float):
  """min(ratio * A, clip(ratio) * A) per token. _unbatched_.

  Args:
    logp: [G, L] float, current policy's token log-probs.
    logp_old: [G, L] float, behaviour policy's (no gradient).
    adv: [G, L] float advantages (no gradient).
    mask: [G, L] bool, tokens that count.
    clip_eps: the ratio is clipped to [1 - eps, 1 + eps].

  Returns:
    [G, L] per-token objective (to maximise), 0 where masked.
  """
  chex.assert_type([logp, logp_old, adv, mask],
                   [float, float, float, bool])
  chex.assert_equal_shape([logp, adv])
  ratio = importance_ratio(logp, logp_old, mask)
  adv = jax.lax.stop_gradient(adv)
  clipped = jnp.clip(ratio, 1. - clip_eps, 1. + clip_eps)
  return jnp.where(mask, jnp.minimum(ratio * adv, clipped * adv), 0.)


def k3_kl(logp, logp_ref, mask):
  """k3 estimator of KL(pi || pi_ref) per token, >= 0. _unbatched_ [G, L].

  exp(ref - logp) - (ref - logp) - 1, evaluated on samples from pi.
  """
  chex.assert_rank([logp, logp_ref, mask], 2)
  chex.assert_equal_shape([logp, logp_ref, mask])
  diff = jnp.where(mask, jax.lax.stop_gradient(logp_ref) - logp, 0.)
  return jnp.where(mask, jnp.exp(diff) - diff - 1., 0.)


def value_td_loss(values, targets, mask):
  """Mean squared TD error. values, targets [G, L+1]; mask [G]. _unbatched_."""
  chex.assert_rank([values, targets, mask], [2, 2, 1])
  chex.assert_equal_shape([values, targets])
  err = (values - jax.lax.stop_gradient(targets)) ** 2
  w = jnp.broadcast_to(mask[:, None], err.shape).astype(jnp.float32)
  return (err * w).sum() / jnp.maximum(w.sum(), 1.)
