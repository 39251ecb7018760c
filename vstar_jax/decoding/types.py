"""Types shared by the decoders: the candidate group they all return.

Shapes: B users, G candidates, L levels.
"""
import chex
import jax.numpy as jnp


@chex.dataclass(frozen=True)
class Candidates:
  """G candidate items per user, the group RL scores and compares."""
  items: chex.Array      # [B, G] int32 item index, -1 where mask is False
  codes: chex.Array      # [B, G, L] int32 SID codes
  logp: chex.Array       # [B, G] float32 log-prob under the rollout policy
  value: chex.Array      # [B, G] float32 leaf value (0 for completions)
  evaluated: chex.Array  # [B, G] bool, True = an evaluated tree leaf
  mask: chex.Array       # [B, G] bool, True = a real candidate
  cost: chex.Array       # [B] int32 decoder tokens spent


def unevaluated_candidates(items: chex.Array, codes: chex.Array,
                           logp: chex.Array, mask: chex.Array,
                           cost: int) -> Candidates:
  """Candidates of a decoder that evaluates no values (beam, sampling).

  items, logp, mask: [B, G]; codes: [B, G, L]; cost: decoder tokens per user.
  Masked-out entries get item -1 and log-prob 0.
  """
  chex.assert_equal_shape([items, logp, mask])
  return Candidates(
      items=jnp.where(mask, items, -1), codes=codes,
      logp=jnp.where(mask, logp, 0.),
      value=jnp.zeros(mask.shape, jnp.float32),
      evaluated=jnp.zeros(mask.shape, bool), mask=mask,
      cost=jnp.full(mask.shape[:1], cost, jnp.int32))
