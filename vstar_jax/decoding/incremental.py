"""Level-by-level decoding of SID paths from one history encoding.

Beam search, sampling and the host reference search all walk the SID levels
the same way: encode the history once, evaluate the BOS token, then one
decoder token per live path per level, appending each token's keys to its
path cache. The value block is skipped (none of them reads values), and each
call applies only the output head of the level it needs.

Shapes: B users, K paths per user, V codes, Y cached layers, P path length,
H heads, Dh head size.
"""
import chex
import jax
import jax.numpy as jnp

from vstar_jax.models import policy


@chex.dataclass(frozen=True)
class Paths:
  """Cached keys of the tokens on each live path."""
  k: chex.Array  # [Y, B, K, P, H, Dh]
  v: chex.Array  # [Y, B, K, P, H, Dh]

  @property
  def length(self) -> int:
    return self.k.shape[3]


def encode(net: policy.PolicyValueNet, params, item_codes, history,
           history_mask, with_value: bool = False) -> policy.Context:
  """History context, by default without the value block.

  history [B, T] -> Context; item_codes [N, L].
  """
  hist_codes = jnp.take(item_codes, jnp.maximum(history, 0), axis=0)
  return net.apply({'params': params}, hist_codes, history_mask,
                   with_value=with_value, history_items=history,
                   method=net.encode_history)


def start(net: policy.PolicyValueNet, params, context: policy.Context):
  """Evaluates BOS: (level-1 logits [B, 1, V], Paths with P = 1)."""
  batch = context.mask.shape[0]
  zeros = jnp.zeros((batch, 1, 1), jnp.int32)
  out = net.apply({'params': params}, context, zeros, zeros,
                  policy.empty_path(net.cfg, batch, 1, 1, context.k.dtype,
                                    with_value=False),
                  head_level=0, method=net.decode)
  return out.logits[:, :, 0], Paths(k=out.k, v=out.v)


def extend(net: policy.PolicyValueNet, params, context: policy.Context,
           paths: Paths, codes: jax.Array):
  """Feeds codes [B, K] as the next token of each path.

  The paths must already be aligned with `codes` (reordered to the parents
  of the new tokens). Returns (next-level logits [B, K, V], Paths + 1).
  """
  batch, width = codes.shape
  depth = paths.length                 # tokens so far: BOS + (depth-1) codes
  out = net.apply(
      {'params': params}, context, codes[..., None],
      jnp.full((batch, width, 1), depth, jnp.int32),
      policy.Path(k=paths.k, v=paths.v,
                  mask=jnp.ones((batch, width, 1, depth), bool)),
      head_level=depth, method=net.decode)
  return out.logits[:, :, 0], Paths(
      k=jnp.concatenate([paths.k, out.k], axis=3),
      v=jnp.concatenate([paths.v, out.v], axis=3))


def select(paths: Paths, parent: jax.Array) -> Paths:
  """Reorders paths to the given parents. parent [B, K'] -> K' paths."""
  pick = lambda x: jnp.take_along_axis(x, parent[None, :, :, None, None, None],
                                       axis=2)
  return Paths(k=pick(paths.k), v=pick(paths.v))


def broadcast(paths: Paths, width: int) -> Paths:
  """One path per user copied to `width` paths (after BOS)."""
  grow = lambda x: jnp.broadcast_to(x, x.shape[:2] + (width,) + x.shape[3:])
  return Paths(k=grow(paths.k), v=grow(paths.v))
