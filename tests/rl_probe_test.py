"""RL probes (issue 12): prompt sets, the probed rollout, and its statistics."""
import jax
import jax.numpy as jnp
import numpy as np

from vstar_jax import config as config_lib
from vstar_jax import experiment as experiment_lib
from vstar_jax.data import splits
from vstar_jax.eval import rl_probe
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.train import recommender


def _setup(smoke_config, tmp_path, **overrides):
  config = smoke_config(**{'data.fresh_windows': 1, **overrides})
  exp = experiment_lib.load_experiment(config, str(tmp_path))
  model = recommender.from_config(config, exp)
  return config, exp, model, model.init(jax.random.key(0))


def test_pool_is_the_fresh_windows_and_valid_is_held_out(smoke_config,
                                                         tmp_path):
  config, exp, _, _ = _setup(smoke_config, tmp_path)
  sets = rl_probe.prompt_sets(config, exp.split, num_prompts=10, seed=0)
  fresh = splits.stage_examples(exp.split, 'rl', fresh_windows=1)
  assert len(sets['pool']) == min(10, len(fresh))
  pool_rows = {(u, t) for u, t in zip(fresh.user, fresh.target)}
  assert {(u, t) for u, t in zip(sets['pool'].user, sets['pool'].target)
          } <= pool_rows
  sft_rows = splits.stage_examples(exp.split, 'sft', fresh_windows=1)
  assert not {(u, t) for u, t in zip(sets['pool'].user, sets['pool'].target)
              } & {(u, t) for u, t in zip(sft_rows.user, sft_rows.target)}
  np.testing.assert_array_equal(
      sets['valid'].target,
      experiment_lib.fixed_subset(exp.split.valid, 10, 0).target)


def test_runs_without_rl_are_probed_with_beam_search(smoke_config, tmp_path):
  sft_only = smoke_config(**{'stages': 'sft', 'rollout.kind': 'ved'})
  assert rl_probe.probe_rollout(sft_only, 3).kind == 'beam'
  rl = smoke_config(**{'stages': 'sft,rl', 'rollout.kind': 'ved'})
  assert rl_probe.probe_rollout(rl, 3).kind == 'ved'


def test_target_in_group_matches_the_rollout(smoke_config, tmp_path):
  config, exp, model, params = _setup(
      smoke_config, tmp_path, **{'stages': 'sft,rl', 'rollout.kind': 'beam'})
  out = rl_probe.probe(config, exp, model, params, num_prompts=16,
                       batch_size=8, seed=0)
  cfg = config_lib.rollout_config(config, exp.num_levels)
  hits = []
  for name in rl_probe.PROMPT_SETS:
    ex = rl_probe.prompt_sets(config, exp.split, 16, 0)[name]
    num = len(ex) // 8 * 8
    cands = rollout_lib.rollout(model.net, params, exp.trie,
                                jax.random.key(0), ex.history[:num],
                                ex.history_mask[:num], cfg=cfg)
    hit = (cands.mask & (cands.items == jnp.asarray(ex.target[:num])[:, None])
           ).any(1)
    hits.append(float(hit.mean()))
    assert out[name]['prompts'] == num
    np.testing.assert_allclose(out[name]['target_in_group'], hits[-1],
                               atol=1e-6)
    assert 0.0 <= out[name]['zero_adv_frac'] <= 1.0
  assert 0.0 <= out['pool']['ndcg@10'] <= out['pool']['hr@10'] <= 1.0
  assert out['rollout']['kind'] == 'beam'
