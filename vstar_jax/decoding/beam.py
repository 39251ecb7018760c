"""Trie-constrained beam search over SID paths, fully batched and jittable.

Every level is one batched decoder call over the K live beams: tokens are
masked by the device trie (a gather per beam), scores are log-probabilities
under the trie-constrained policy, and the next beams are the top K of the
K * V extensions. The Python loop runs over the L levels only (static, small).

Cost in decoder tokens: 1 (BOS) + (L - 1) * K; the last level's codes are
chosen from the depth-(L-1) logits and need no extra evaluation.

Shapes: B users, K beams, L levels, V codes, Y cached layers, H heads,
Dh head size.
"""
import chex
import jax
import jax.numpy as jnp

from vstar_jax.models import policy
from vstar_jax.sid import trie as trie_lib


@chex.dataclass(frozen=True)
class BeamResult:
  """Top-K items per user, best first."""
  items: chex.Array   # [B, K] int32 item index, -1 for a dead beam
  codes: chex.Array   # [B, K, L] int32 SID codes
  scores: chex.Array  # [B, K] float32 log-prob of the item, -inf if dead


def take_beams(x: jax.Array, parent: jax.Array, axis: int) -> jax.Array:
  """Selects beams of x along `axis` (K), the users' axis (B) being axis-1.

  Args:
    x: [..., B, k, ...] with B at `axis - 1` and the beams at `axis`.
    parent: [B, K] int32 beam indices into x's k axis.
    axis: the beam axis of x.
  """
  shape = [1] * x.ndim
  shape[axis - 1], shape[axis] = parent.shape
  return jnp.take_along_axis(x, parent.reshape(shape), axis=axis)


def beam_search(net: policy.PolicyValueNet, params, trie, history,
                history_mask, *, beam_width: int,
                constrained: bool = True) -> BeamResult:
  """Constrained beam search for a batch of users.

  Args:
    net: the policy module (static).
    params: its parameters.
    trie: a `PrefixTrie` over the catalogue's SIDs.
    history: [B, T] int32 item indices.
    history_mask: [B, T] bool.
    beam_width: K, a static int; also the number of items returned.
    constrained: False decodes over all codes (for benchmarks only); items
      whose path is not in the trie come back as -1.

  Returns:
    BeamResult with K distinct items per user, sorted by score.
  """
  chex.assert_rank([history, history_mask], 2)
  num_levels = trie.num_levels
  vocab = trie.vocab_size
  batch = history.shape[0]
  variables = {'params': params}
  hist_codes = jnp.take(trie.codes, jnp.maximum(history, 0), axis=0)
  context = net.apply(variables, hist_codes, history_mask,
                      method=net.encode_history)
  decode = lambda codes, depths, path: net.apply(
      variables, context, codes, depths, path, method=net.decode)

  # Depth 0: one BOS token per user.
  zeros = jnp.zeros((batch, 1, 1), jnp.int32)
  out = decode(zeros, zeros, policy.empty_path(
      net.cfg, batch, 1, 1, context.k.dtype))
  prefix = jnp.zeros((batch, 1), jnp.int32)
  scores = jnp.zeros((batch, 1), jnp.float32)
  path_k, path_v = out.k, out.v            # [Y, B, 1, 1, H, Dh]
  codes = jnp.zeros((batch, 1, 0), jnp.int32)
  for level in range(num_levels):
    logits = out.logits[:, :, 0]            # [B, k, V]
    if constrained:
      valid = trie_lib.valid_next_mask(trie, level, prefix)
    else:
      valid = jnp.ones(logits.shape, bool)
    cand = (scores[..., None] +
            policy.masked_log_softmax(logits, valid)).reshape(batch, -1)
    if cand.shape[1] < beam_width:   # tiny vocabularies: pad with dead beams
      cand = jnp.pad(cand, ((0, 0), (0, beam_width - cand.shape[1])),
                     constant_values=-jnp.inf)
    top_scores, flat = jax.lax.top_k(cand, beam_width)
    parent = jnp.minimum(flat // vocab, logits.shape[1] - 1)   # [B, K]
    code = (flat % vocab).astype(jnp.int32)
    scores = top_scores
    codes = jnp.concatenate(
        [take_beams(codes, parent, 1), code[..., None]], axis=-1)
    prefix = trie_lib.next_prefix(
        trie, level, take_beams(prefix, parent, 1), code)
    prefix = jnp.where(jnp.isfinite(scores), prefix, -1)
    if level == num_levels - 1:
      break
    path_k = take_beams(path_k, parent, 2)   # [Y, B, K, P, H, Dh]
    path_v = take_beams(path_v, parent, 2)
    depth = level + 1
    path = policy.Path(
        k=path_k, v=path_v,
        mask=jnp.ones((batch, beam_width, 1, depth), bool))
    out = decode(code[..., None], jnp.full((batch, beam_width, 1), depth,
                                           jnp.int32), path)
    path_k = jnp.concatenate([path_k, out.k], axis=3)
    path_v = jnp.concatenate([path_v, out.v], axis=3)
  items = jnp.where(jnp.isfinite(scores), prefix, -1)
  return BeamResult(items=items, codes=codes, scores=scores)


def decode_cost(num_levels: int, beam_width: int) -> int:
  """Decoder tokens a beam search evaluates (prefill excluded)."""
  return 1 + (num_levels - 1) * beam_width
