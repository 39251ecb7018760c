"""Trie-constrained ancestral sampling of SID paths.

G independent samples per user at temperature tau, one decoder call per
level for all of them. Cost in decoder tokens: 1 + (L - 1) * G (the BOS
token is shared; shared prefixes are not deduplicated).

Shapes: B users, G samples, T history, L levels, V codes.
"""
import jax
import jax.numpy as jnp

from vstar_jax.decoding import beam
from vstar_jax.decoding import incremental
from vstar_jax.decoding import types
from vstar_jax.models import policy
from vstar_jax.sid import trie as trie_lib


def sample_candidates(net: policy.PolicyValueNet, params, trie, rng_key,
                      history, history_mask, *, num_samples: int,
                      temperature: float) -> types.Candidates:
  """G trie-constrained samples per user at temperature tau.

  Args:
    net: the policy module (static).
    params: its parameters.
    trie: PrefixTrie of the catalogue.
    rng_key: typed key, consumed (one subkey per level).
    history: [B, T] int32; history_mask: [B, T] bool.
    num_samples: G, a static int.
    temperature: tau > 0; the returned log-probs are at tau = 1.

  Returns:
    Candidates [B, G], duplicates kept.
  """
  g = num_samples
  batch = history.shape[0]
  num_levels = trie.num_levels
  context = incremental.encode(net, params, trie.codes, history, history_mask)
  logits, paths = incremental.start(net, params, context)
  # The BOS token's output is shared by the G samples.
  logits = jnp.broadcast_to(logits, (batch, g, logits.shape[-1]))
  paths = incremental.broadcast(paths, g)
  prefix = jnp.zeros((batch, g), jnp.int32)
  logp = jnp.zeros((batch, g), jnp.float32)
  codes = []
  keys = jax.random.split(rng_key, num_levels)
  for level in range(num_levels):
    valid = trie_lib.valid_next_mask(trie, level, prefix)
    level_logp = policy.masked_log_softmax(logits, valid)
    sample_logits = jnp.where(valid, level_logp / temperature,
                              jnp.finfo(jnp.float32).min)
    code = jax.random.categorical(keys[level], sample_logits).astype(
        jnp.int32)
    logp = logp + jnp.take_along_axis(level_logp, code[..., None], -1)[..., 0]
    prefix = trie_lib.next_prefix(trie, level, prefix, code)
    codes.append(code)
    if level < num_levels - 1:
      logits, paths = incremental.extend(net, params, context, paths, code)
  mask = jnp.isfinite(logp) & (prefix >= 0)
  return types.unevaluated_candidates(
      prefix, jnp.stack(codes, -1), logp, mask,
      beam.decode_cost(num_levels, g))
