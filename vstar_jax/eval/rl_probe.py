"""What RL can learn from, and what it changed: probes of one parameter set.

Issue 12's discriminating diagnostics, measured on two fixed prompt sets of
the same size:

  * `pool`: windows of RL's prompt pool (the fresh windows under the
    fresh-prompt protocol, every training window otherwise);
  * `valid`: held-out validation prompts.

For each set: the rollout's group statistics (target in group, share of
all-zero-advantage groups, reward; `rl.diagnostics.group_stats`) and, for
the pool, NDCG@10 / HR@10 of the full-catalogue ranking at the reporting
beam. Probing the start (the SFT parameters RL began from) and the selected
RL parameters with the same rollout shows whether the reward was available
where RL looked (memorised prompts: high on the pool, low on validation) and
whether RL learnt the pool's targets (pool NDCG before vs after).
"""
import dataclasses

import jax
import numpy as np

from vstar_jax import config as config_lib
from vstar_jax import experiment as experiment_lib
from vstar_jax.bench import rollout_compare
from vstar_jax.data import splits
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.train import evaluation

PROMPT_SETS = ('pool', 'valid')


def probe_rollout(config: config_lib.RunConfig, num_levels: int
                  ) -> rollout_lib.RolloutConfig:
  """The run's own rollout; runs without RL (SFT, the CE control) are
  probed with beam search of the run's rollout.beam_width."""
  if 'rl' not in config.stage_list:
    config = dataclasses.replace(
        config, rollout=dataclasses.replace(config.rollout, kind='beam'))
  return config_lib.rollout_config(config, num_levels)


def prompt_sets(config: config_lib.RunConfig, split: splits.Split,
                num_prompts: int, seed: int) -> dict[str, splits.Examples]:
  """{'pool', 'valid'}: fixed subsets of at most num_prompts windows."""
  pool = splits.stage_examples(
      split, 'rl', fresh_windows=config.data.fresh_windows,
      replay_sft_windows=config.rl.replay_sft_windows)
  return {'pool': experiment_lib.fixed_subset(pool, num_prompts, seed),
          'valid': experiment_lib.fixed_subset(split.valid, num_prompts,
                                               seed)}


def _group_stats(group_fn, params, exp, examples: splits.Examples,
                 batch_size: int, seed: int) -> dict[str, float]:
  """Mean group statistics over full batches of `examples`."""
  num = len(examples) // batch_size * batch_size
  if num == 0:
    raise ValueError(f'{len(examples)} prompts < one batch of {batch_size}')
  base = jax.random.key(seed)
  stats = []
  for i, start in enumerate(range(0, num, batch_size)):
    rows = slice(start, start + batch_size)
    out, _ = group_fn(params, exp.trie, jax.random.fold_in(base, i),
                      examples.history[rows], examples.history_mask[rows],
                      examples.target[rows], exp.long_tail)
    stats.append(out)
  stats = jax.device_get(stats)
  return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]} | {
      'prompts': num}


def probe(config: config_lib.RunConfig, exp, model, params, *,
          num_prompts: int, batch_size: int, seed: int) -> dict:
  """Group statistics on the pool and validation sets, ranking on the pool.

  Returns:
    {'rollout': {kind, num_candidates, beam_width, ved_budget},
     'pool': {group stats..., 'ndcg@10', 'hr@10', ...}, 'valid': {...}}.
  """
  cfg = probe_rollout(config, exp.num_levels)
  group_fn = jax.jit(rollout_compare.make_group_fn(
      model.net, cfg, cfg.num_candidates, config.rl.reward))
  sets = prompt_sets(config, exp.split, num_prompts, seed)
  out = {'rollout': {'kind': cfg.kind, 'num_candidates': cfg.num_candidates,
                     'beam_width': cfg.beam_width,
                     'ved_budget': cfg.ved.budget},
         'reward': config.rl.reward}
  for name in PROMPT_SETS:
    out[name] = _group_stats(group_fn, params, exp, sets[name], batch_size,
                             seed)
  rank_fn = evaluation.jit_rank_fn(model, config.eval.beam_width, None)
  ranking, _ = evaluation.evaluate_split(
      rank_fn, params, exp, sets['pool'], batch_size=config.eval.batch_size,
      beam_width=config.eval.beam_width, diversity=False)
  out['pool'].update({k: ranking[k] for k in ('ndcg@10', 'hr@10')})
  return out
