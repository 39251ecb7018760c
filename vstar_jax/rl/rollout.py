"""Rollout policies for RL behind one interface: VED, beam search, sampling.

`rollout(net, params, trie, rng_key, history, history_mask, cfg=...)` returns
`types.Candidates` [B, G] for any kind, so RL switches rollout policy by
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

from vstar_jax.decoding import beam
from vstar_jax.decoding import sampling
from vstar_jax.decoding import transformer
from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import diagnostics

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


def ved_rollout(net, params, trie, rng_key, history, history_mask,
                cfg: RolloutConfig):
  """VED on the policy network: (Candidates [B, G], the DecodeTree)."""
  ved_cfg = dataclasses.replace(cfg.ved, temperature=cfg.temperature)
  return transformer.ved_decode(net, params, trie, rng_key, history,
                                history_mask, cfg=ved_cfg)


def rollout(net: policy.PolicyValueNet, params, trie, rng_key, history,
            history_mask, *, cfg: RolloutConfig) -> types.Candidates:
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
  return _rollout(net, params, trie, rng_key, history, history_mask,
                  cfg=cfg)[0]


def rollout_with_stats(net: policy.PolicyValueNet, params, trie, rng_key,
                       history, history_mask, target, *, cfg: RolloutConfig
                       ) -> tuple[types.Candidates, dict]:
  """`rollout` plus, for VED, `diagnostics.ved_tree_stats` of its trees
  against target [B] (the value AUC among the leaf pool, ...) under 'ved/'
  keys; {} for beam and sampling."""
  cands, tree = _rollout(net, params, trie, rng_key, history, history_mask,
                         cfg=cfg)
  if tree is None:
    return cands, {}
  stats = diagnostics.ved_tree_stats(tree, target, trie, cfg.ved)
  return cands, {f'ved/{k}': v for k, v in stats.items()}


def _rollout(net, params, trie, rng_key, history, history_mask, *,
             cfg: RolloutConfig):
  """(Candidates [B, G], the VED DecodeTree or None), no gradient."""
  cfg.validate(trie.num_levels)
  params = jax.lax.stop_gradient(params)
  tree = None
  if cfg.kind == 'beam':
    out = beam.beam_candidates(net, params, trie, history, history_mask,
                               beam_width=cfg.beam_width,
                               num_candidates=cfg.num_candidates)
  elif cfg.kind == 'sample':
    out = sampling.sample_candidates(
        net, params, trie, rng_key, history, history_mask,
        num_samples=cfg.num_candidates, temperature=cfg.temperature)
  else:
    out, tree = ved_rollout(net, params, trie, rng_key, history, history_mask,
                            cfg)
    tree = jax.tree_util.tree_map(jax.lax.stop_gradient, tree)
  return jax.tree_util.tree_map(jax.lax.stop_gradient, out), tree
