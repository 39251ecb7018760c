"""Rollout policies for RL behind one interface: VED, beam search, sampling.

`rollout(net, params, trie, rng_key, history, history_mask, cfg=...)` returns
`search.Candidates` [B, G] for any kind, so RL switches rollout policy by
config. Costs are in decoder tokens (Eq. 10, prefill excluded):

  * ved: at most `budget` (counted exactly in the tree);
  * beam: 1 + (L - 1) * W for width W (the top G beams are the group);
  * sample: 1 + (L - 1) * G (G independent trie-constrained samples at
    temperature tau; the BOS token is shared, shared prefixes are not
    deduplicated).

Shapes: B users, G candidates, T history, L levels, V codes.
"""
import dataclasses

import jax
import jax.numpy as jnp

from vstar_jax.decoding import beam
from vstar_jax.decoding import incremental
from vstar_jax.models import policy
from vstar_jax.sid import trie as trie_lib
from vstar_jax.ved import search

ROLLOUT_KINDS = ('ved', 'beam', 'sample')


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  """Static rollout settings (built by vstar_jax.config.rollout_config)."""
  kind: str
  num_candidates: int             # G
  beam_width: int                 # W for kind='beam' (>= G)
  temperature: float              # sampling and VED child sampling
  ved: search.VedConfig

  def validate(self, num_levels: int) -> None:
    if self.kind not in ROLLOUT_KINDS:
      raise ValueError(f'rollout kind {self.kind!r}: expected one of '
                       f'{ROLLOUT_KINDS}')
    if self.kind == 'beam' and self.beam_width < self.num_candidates:
      raise ValueError(f'beam width {self.beam_width} < num_candidates '
                       f'{self.num_candidates}')
    if self.kind == 'ved':
      if self.ved.num_candidates != self.num_candidates:
        raise ValueError('ved.num_candidates must equal num_candidates')
      self.ved.validate(num_levels)

  def cost(self, num_levels: int) -> int:
    """Decoder-token cost per user (an upper bound for VED)."""
    if self.kind == 'ved':
      return self.ved.budget
    width = self.beam_width if self.kind == 'beam' else self.num_candidates
    return beam.decode_cost(num_levels, width)


def transformer_evaluator(net: policy.PolicyValueNet, params,
                          context: policy.Context):
  """VED node evaluator over the policy network (see ved.search).

  The per-node cache is the node token's keys/values, stored [B, M, Y, H, Dh]
  so that the tree can gather ancestors by node index.
  """
  variables = {'params': params}

  def evaluate(codes, depths, path_cache, path_mask):
    to_layers_first = lambda x: jnp.moveaxis(x, 3, 0)  # [B,M,P,Y,..]->[Y,..]
    path = policy.Path(k=to_layers_first(path_cache['k']),
                       v=to_layers_first(path_cache['v']),
                       mask=path_mask[:, :, None, :])
    out = net.apply(variables, context, codes[..., None], depths[..., None],
                    path, method=net.decode)
    cache = {'k': jnp.moveaxis(out.k[:, :, :, 0], 0, 2),
             'v': jnp.moveaxis(out.v[:, :, :, 0], 0, 2)}
    return out.logits[:, :, 0], out.value[:, :, 0], cache

  batch = context.mask.shape[0]
  shape = (batch, 1, net.cfg.num_layers + 1, net.cfg.num_heads,
           net.cfg.head_dim)
  cache_like = {'k': jnp.zeros(shape, context.k.dtype),
                'v': jnp.zeros(shape, context.k.dtype)}
  return evaluate, cache_like


def _beam_rollout(net, params, trie, history, history_mask, cfg):
  res = beam.beam_search(net, params, trie, history, history_mask,
                         beam_width=cfg.beam_width)
  g = cfg.num_candidates
  mask = res.items[:, :g] >= 0
  batch = history.shape[0]
  return search.Candidates(
      items=res.items[:, :g], codes=res.codes[:, :g],
      logp=jnp.where(mask, res.scores[:, :g], 0.),
      value=jnp.zeros(mask.shape, jnp.float32),
      evaluated=jnp.zeros(mask.shape, bool), mask=mask,
      cost=jnp.full((batch,), cfg.cost(trie.num_levels), jnp.int32))


def _sample_rollout(net, params, trie, rng_key, history, history_mask, cfg):
  """G trie-constrained samples per user at temperature tau."""
  g = cfg.num_candidates
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
    sample_logits = jnp.where(valid, level_logp / cfg.temperature,
                              jnp.finfo(jnp.float32).min)
    code = jax.random.categorical(keys[level], sample_logits).astype(
        jnp.int32)
    logp = logp + jnp.take_along_axis(level_logp, code[..., None], -1)[..., 0]
    prefix = trie_lib.next_prefix(trie, level, prefix, code)
    codes.append(code)
    if level < num_levels - 1:
      logits, paths = incremental.extend(net, params, context, paths, code)
  mask = jnp.isfinite(logp) & (prefix >= 0)
  return search.Candidates(
      items=jnp.where(mask, prefix, -1), codes=jnp.stack(codes, -1),
      logp=jnp.where(mask, logp, 0.),
      value=jnp.zeros(mask.shape, jnp.float32),
      evaluated=jnp.zeros(mask.shape, bool), mask=mask,
      cost=jnp.full((batch,), cfg.cost(num_levels), jnp.int32))


def ved_rollout(net, params, trie, rng_key, history, history_mask,
                cfg: RolloutConfig):
  """VED on the policy network: (Candidates [B, G], the DecodeTree)."""
  context = incremental.encode(net, params, trie.codes, history, history_mask,
                               with_value=True)
  evaluate, cache_like = transformer_evaluator(net, params, context)
  ved_cfg = dataclasses.replace(cfg.ved, temperature=cfg.temperature)
  return search.ved_search(evaluate, trie, rng_key, batch=history.shape[0],
                           cache_like=cache_like, cfg=ved_cfg)


def rollout(net: policy.PolicyValueNet, params, trie, rng_key, history,
            history_mask, *, cfg: RolloutConfig) -> search.Candidates:
  """Candidate groups for a batch of prompts; no gradient flows through.

  Args:
    net: the policy/value network (static).
    params: its parameters (stop-gradiented here).
    trie: PrefixTrie.
    rng_key: typed key, consumed (VED child sampling, sampling).
    history: [B, T] int32; history_mask: [B, T] bool.
    cfg: RolloutConfig (static).

  Returns:
    Candidates with [B, G] fields.
  """
  cfg.validate(trie.num_levels)
  params = jax.lax.stop_gradient(params)
  if cfg.kind == 'beam':
    out = _beam_rollout(net, params, trie, history, history_mask, cfg)
  elif cfg.kind == 'sample':
    out = _sample_rollout(net, params, trie, rng_key, history, history_mask,
                          cfg)
  else:
    out, _ = ved_rollout(net, params, trie, rng_key, history, history_mask,
                         cfg)
  return jax.tree_util.tree_map(jax.lax.stop_gradient, out)
