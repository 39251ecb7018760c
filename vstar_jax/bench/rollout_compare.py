"""VED vs beam search vs sampling at equal decoder-token budgets.

For a budget B (decoder tokens per prompt, Eq. 10) every method returns a
group of G candidates for the same prompts:

  * beam: width W = (B - 1) // (L - 1) >= G, the top G beams;
  * sample: S = (B - 1) // (L - 1) >= G trie-constrained samples at
    temperature tau, duplicates dropped, the G most probable kept;
  * ved: VED with budget B (init beam B0, 1 + L * B0 <= B).

The groups are scored with the RL reward and GRPO advantages and summarised
by `diagnostics.group_stats`; wall time is per prompt, compile excluded.
Shapes: B prompts per batch, G candidates, L levels.
"""
import dataclasses
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search
from vstar_jax.rl import advantages
from vstar_jax.rl import diagnostics
from vstar_jax.rl import rewards as rewards_lib
from vstar_jax.rl import rollout as rollout_lib

METHODS = ('ved', 'beam', 'sample')


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
                   num_candidates: int, init_beam: int, temperature: float,
                   lam: float, beta: float) -> rollout_lib.RolloutConfig:
  width = width_for_budget(budget, num_levels)
  if method in ('beam', 'sample') and width < num_candidates:
    raise ValueError(f'budget {budget} gives {method} width {width} < '
                     f'G = {num_candidates}')
  return rollout_lib.RolloutConfig(
      kind=method,
      num_candidates=width if method == 'sample' else num_candidates,
      beam_width=width, temperature=temperature,
      ved=search.VedConfig(budget=budget, init_beam=init_beam,
                           num_candidates=num_candidates, lam=lam, beta=beta,
                           temperature=temperature))


def make_group_fn(net, cfg: rollout_lib.RolloutConfig, num_candidates: int,
                  reward: str):
  """group(params, trie, key, history, mask, target, long_tail) -> stats."""
  def group(params, trie, rng_key, history, history_mask, target, long_tail):
    extra = {}
    if cfg.kind == 'ved':
      cands, tree = rollout_lib.ved_rollout(net, params, trie, rng_key,
                                            history, history_mask, cfg)
      extra = diagnostics.ved_tree_stats(tree, target, trie.num_levels,
                                         num_candidates)
    else:
      cands = rollout_lib.rollout(net, params, trie, rng_key, history,
                                  history_mask, cfg=cfg)
    if cfg.kind == 'sample':
      cands = _top_distinct(cands, num_candidates)
    target_codes = jnp.take(trie.codes, target, axis=0)
    r = jax.vmap(lambda i, c, lp, m, t, tc: rewards_lib.group_reward(
        reward, i, c, lp, m, t, tc))(cands.items, cands.codes, cands.logp,
                                     cands.mask, target, target_codes)
    adv = advantages.batched_grpo_advantages(r, cands.mask)
    return {**diagnostics.group_stats(cands, r, adv, target, long_tail),
            **extra}
  return group


@dataclasses.dataclass(frozen=True)
class Prompts:
  history: np.ndarray       # [M, T]
  history_mask: np.ndarray  # [M, T]
  target: np.ndarray        # [M]


def compare(net, params, trie, prompts: Prompts, long_tail: np.ndarray, *,
            budgets: Sequence[int], methods: Sequence[str] = METHODS,
            num_candidates: int, init_beam: int, temperature: float,
            lam: float, beta: float, batch_size: int, reward: str,
            seed: int) -> list[dict]:
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
  rows = []
  for budget in budgets:
    for method in methods:
      cfg = rollout_config(method, budget, num_levels=num_levels,
                           num_candidates=num_candidates,
                           init_beam=init_beam, temperature=temperature,
                           lam=lam, beta=beta)
      fn = jax.jit(make_group_fn(net, cfg, num_candidates, reward))
      base = jax.random.key(seed)
      start = time.perf_counter()
      jax.block_until_ready(fn(params, trie, base, *batches[0], long_tail))
      compile_s = time.perf_counter() - start
      stats, elapsed = [], 0.0
      for i, batch in enumerate(batches):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(params, trie,
                                       jax.random.fold_in(base, i), *batch,
                                       long_tail))
        elapsed += time.perf_counter() - start
        stats.append(out)
      stats = jax.device_get(stats)
      row = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
      row.update(method=method, budget=budget,
                 ms_per_prompt=1e3 * elapsed / num, compile_s=compile_s,
                 prompts=num)
      rows.append(row)
  return rows
