"""VED vs beam search vs sampling at equal decoder-token budgets.

For a budget B (decoder tokens per prompt, Eq. 10) every method returns a
group of G candidates for the same prompts:

  * beam: width W = (B - 1) // (L - 1) >= G, the top G beams;
  * sample: S = (B - 1) // (L - 1) >= G trie-constrained samples at
    temperature tau, duplicates dropped, the G most probable kept;
  * ved_*: VED with budget B, one row per entry of VED_VARIANTS (a preset of
    `search.PRESETS` plus overrides).

The groups are scored with the RL reward and GRPO advantages and summarised
by `diagnostics.group_stats`; VED rows add `diagnostics.ved_tree_stats`.
Every row also compares its per-prompt hits with beam search of width G
(`found_outside_beam`: the group holds the target and beam-G's does not;
`beam_found_lost`: the reverse). Wall time is per prompt, compile excluded;
`decoder_calls` is the number of sequential evaluator calls per batch.
Shapes: B prompts per batch, G candidates, L levels.
"""
import dataclasses
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vstar_jax.decoding import beam
from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search
from vstar_jax.rl import advantages
from vstar_jax.rl import diagnostics
from vstar_jax.rl import rewards as rewards_lib
from vstar_jax.rl import rollout as rollout_lib

# name -> (preset, overrides of search.preset).
VED_VARIANTS = {
    'ved_paper': ('paper', {}),
    'ved_sup_logp_tree': ('superset', {'selection': 'tree'}),
    'ved_sup_logp_walk': ('superset', {'selection': 'walk'}),
    'ved_sup_value_tree': ('superset', {'rank': 'value', 'selection': 'tree'}),
    'ved_sup_mixed_tree': ('superset', {'rank': 'mixed', 'selection': 'tree'}),
    'ved_sup_logp_tree_raw': ('superset', {'normalize_depth': False,
                                           'selection': 'tree'}),
    'ved_sup_logp_tree_m1': ('superset', {'nodes_per_iter': 1,
                                          'selection': 'tree'}),
}
METHODS = ('beam', 'sample') + tuple(VED_VARIANTS)


def width_for_budget(budget: int, num_levels: int) -> int:
  """Largest beam width / sample count whose cost fits the budget."""
  return (budget - 1) // (num_levels - 1)


def _top_distinct(cands: types.Candidates, g: int) -> types.Candidates:
  """Drops duplicate items and keeps the g most probable. [B, S] -> [B, G]."""
  items = jnp.where(cands.mask, cands.items, -1)
  order = jnp.argsort(items, axis=1, stable=True)
  srt = jnp.take_along_axis(items, order, 1)
  first = jnp.concatenate([jnp.ones_like(srt[:, :1], bool),
                           srt[:, 1:] != srt[:, :-1]], axis=1)
  keep = jnp.zeros_like(first).at[
      jnp.arange(items.shape[0])[:, None], order].set(first) & cands.mask
  key = jnp.where(keep, cands.logp, -jnp.inf)
  _, top = jax.lax.top_k(key, g)
  take = lambda x: jnp.take_along_axis(
      x, top.reshape(top.shape + (1,) * (x.ndim - 2)), 1)
  mask = take(keep)
  return types.Candidates(
      items=jnp.where(mask, take(cands.items), -1), codes=take(cands.codes),
      logp=take(cands.logp), value=take(cands.value),
      evaluated=take(cands.evaluated), mask=mask, cost=cands.cost)


def rollout_config(method: str, budget: int, *, num_levels: int,
                   num_candidates: int, temperature: float, lam: float,
                   beta: float, ved_overrides: dict | None = None
                   ) -> rollout_lib.RolloutConfig:
  """The rollout of one benchmark row; ved_overrides apply to VED rows."""
  width = width_for_budget(budget, num_levels)
  if method in ('beam', 'sample') and width < num_candidates:
    raise ValueError(f'budget {budget} gives {method} width {width} < '
                     f'G = {num_candidates}')
  if method not in METHODS:
    raise ValueError(f'method {method!r}: expected one of {METHODS}')
  # Beam and sampling rows carry the paper's VED settings unused. VED rows
  # evaluate V on every node (diagnose_values), so the value AUC columns
  # exist even where the search reads no V; `launch.ved_speed` times the
  # searches without it.
  name, overrides = VED_VARIANTS.get(method, ('paper', {}))
  ved = search.preset(name, budget=budget, num_candidates=num_candidates,
                      lam=lam, beta=beta, temperature=temperature,
                      diagnose_values=True,
                      **{**overrides, **(ved_overrides or {})})
  return rollout_lib.RolloutConfig(
      kind='ved' if method in VED_VARIANTS else method,
      num_candidates=width if method == 'sample' else num_candidates,
      beam_width=width, temperature=temperature, ved=ved)


def make_group_fn(net, cfg: rollout_lib.RolloutConfig, num_candidates: int,
                  reward: str):
  """group(params, trie, key, history, mask, target, long_tail) ->
  (stats, hit [B]): hit = the group holds the target."""
  def group(params, trie, rng_key, history, history_mask, target, long_tail):
    extra = {}
    if cfg.kind == 'ved':
      cands, tree = rollout_lib.ved_rollout(net, params, trie, rng_key,
                                            history, history_mask, cfg)
      extra = diagnostics.ved_tree_stats(tree, target, trie, cfg.ved)
      calls = (cfg.ved.init_cost(trie.num_levels) - 1) // cfg.ved.init_beam
      extra['decoder_calls'] = 1 + calls + tree.iterations[0]
    else:
      cands = rollout_lib.rollout(net, params, trie, rng_key, history,
                                  history_mask, cfg=cfg)
      extra['decoder_calls'] = trie.num_levels
    if cfg.kind == 'sample':
      cands = _top_distinct(cands, num_candidates)
    target_codes = jnp.take(trie.codes, target, axis=0)
    r = jax.vmap(lambda i, c, lp, m, t, tc: rewards_lib.group_reward(
        reward, i, c, lp, m, t, tc))(cands.items, cands.codes, cands.logp,
                                     cands.mask, target, target_codes)
    adv = advantages.batched_grpo_advantages(r, cands.mask)
    hit = (cands.mask & (cands.items == target[:, None])).any(1)
    return {**diagnostics.group_stats(cands, r, adv, target, long_tail),
            **extra}, hit
  return group


@dataclasses.dataclass(frozen=True)
class Prompts:
  history: np.ndarray       # [M, T]
  history_mask: np.ndarray  # [M, T]
  target: np.ndarray        # [M]


def _run_rows(fn, params, trie, batches, long_tail, seed):
  """Calls fn on every batch: (mean stats, hits [M], compile s, run s)."""
  base = jax.random.key(seed)
  start = time.perf_counter()
  jax.block_until_ready(fn(params, trie, base, *batches[0], long_tail))
  compile_s = time.perf_counter() - start
  stats, hits, elapsed = [], [], 0.0
  for i, batch in enumerate(batches):
    start = time.perf_counter()
    out, hit = jax.block_until_ready(
        fn(params, trie, jax.random.fold_in(base, i), *batch, long_tail))
    elapsed += time.perf_counter() - start
    stats.append(out)
    hits.append(hit)
  stats = jax.device_get(stats)
  mean = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
  return mean, np.concatenate(jax.device_get(hits)), compile_s, elapsed


def compare(net, params, trie, prompts: Prompts, long_tail: np.ndarray, *,
            budgets: Sequence[int], methods: Sequence[str] = METHODS,
            num_candidates: int, temperature: float, lam: float,
            beta: float, batch_size: int, reward: str, seed: int,
            ved_overrides: dict | None = None) -> list[dict]:
  """One row per (budget, method): mean group stats and time per prompt."""
  num_levels = trie.num_levels
  num = len(prompts.target) // batch_size * batch_size
  if num == 0:
    raise ValueError(f'need at least batch_size={batch_size} prompts')
  batches = [jax.device_put((prompts.history[i:i + batch_size],
                             prompts.history_mask[i:i + batch_size],
                             prompts.target[i:i + batch_size]))
             for i in range(0, num, batch_size)]
  long_tail = jax.device_put(long_tail)
  settings = dict(num_levels=num_levels, num_candidates=num_candidates,
                  temperature=temperature, lam=lam, beta=beta,
                  ved_overrides=ved_overrides)

  def run(method, budget):
    cfg = rollout_config(method, budget, **settings)
    fn = jax.jit(make_group_fn(net, cfg, num_candidates, reward))
    return _run_rows(fn, params, trie, batches, long_tail, seed)

  _, beam_hit, _, _ = run('beam', beam.decode_cost(num_levels,
                                                   num_candidates))
  rows = []
  for budget in budgets:
    for method in methods:
      row, hit, compile_s, elapsed = run(method, budget)
      row.update(method=method, budget=budget,
                 ms_per_prompt=1e3 * elapsed / num, compile_s=compile_s,
                 prompts=num,
                 found_outside_beam=float(np.mean(hit & ~beam_hit)),
                 beam_found_lost=float(np.mean(beam_hit & ~hit)))
      rows.append(row)
  return rows
