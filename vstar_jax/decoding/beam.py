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

from vstar_jax.decoding import incremental
from vstar_jax.decoding import types
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
  context = incremental.encode(net, params, trie.codes, history, history_mask)
  logits, paths = incremental.start(net, params, context)
  prefix = jnp.zeros((batch, 1), jnp.int32)
  scores = jnp.zeros((batch, 1), jnp.float32)
  codes = jnp.zeros((batch, 1, 0), jnp.int32)
  for level in range(num_levels):
    if constrained:
      valid = trie_lib.valid_next_mask(trie, level, prefix)
    else:
      valid = jnp.ones(logits.shape, bool)
    cand = (scores[..., None] +
            policy.masked_log_softmax(logits, valid)).reshape(batch, -1)
    if cand.shape[1] < beam_width:   # tiny vocabularies: pad with dead beams
      cand = jnp.pad(cand, ((0, 0), (0, beam_width - cand.shape[1])),
                     constant_values=-jnp.inf)
    scores, flat = jax.lax.top_k(cand, beam_width)
    parent = jnp.minimum(flat // vocab, logits.shape[1] - 1)   # [B, K]
    code = (flat % vocab).astype(jnp.int32)
    codes = jnp.concatenate(
        [take_beams(codes, parent, 1), code[..., None]], axis=-1)
    prefix = trie_lib.next_prefix(
        trie, level, take_beams(prefix, parent, 1), code)
    prefix = jnp.where(jnp.isfinite(scores), prefix, -1)
    if level < num_levels - 1:
      logits, paths = incremental.extend(
          net, params, context, incremental.select(paths, parent), code)
  items = jnp.where(jnp.isfinite(scores), prefix, -1)
  return BeamResult(items=items, codes=codes, scores=scores)


def decode_cost(num_levels: int, beam_width: int) -> int:
  """Decoder tokens a beam search evaluates (prefill excluded)."""
  return 1 + (num_levels - 1) * beam_width


def beam_candidates(net: policy.PolicyValueNet, params, trie, history,
                    history_mask, *, beam_width: int, num_candidates: int
                    ) -> types.Candidates:
  """The top G of a width-W beam search as a candidate group.

  history, history_mask: [B, T]. Returns Candidates [B, G]; G <= W.
  """
  res = beam_search(net, params, trie, history, history_mask,
                    beam_width=beam_width)
  g = num_candidates
  return types.unevaluated_candidates(
      res.items[:, :g], res.codes[:, :g], res.scores[:, :g],
      res.items[:, :g] >= 0, decode_cost(trie.num_levels, beam_width))
