"""launch/configs/ablation.py: variants differ only where they should; the
Quickstart main job (default.py) is the fresh-prompt V-STAR recipe."""
import pytest

from launch.configs import ablation
from launch.configs import common
from launch.configs import default
from launch.configs import rl_recipes
from vstar_jax.decoding import beam


@pytest.mark.parametrize('dataset', sorted(ablation.DATASETS))
def test_variants_share_everything_but_the_switches(dataset):
  configs = {v: ablation.get_config(f'{dataset},{v}')
             for v in rl_recipes.VARIANTS}
  switches = {('rollout', 'kind'), ('rl', 'sibling_alpha'),
              ('rl', 'value_coef'), ('ablation',),
              ('model', 'value_grad_to_trunk')}
  switches |= {('rollout', k) for k in rl_recipes.SUPERSET_VED}
  switches.add(('rollout', 'ved_init_beam'))
  flat = {v: {k: val for k, val in _flatten(c.to_dict()).items()
              if k not in switches} for v, c in configs.items()}
  assert all(f == flat['vstar'] for f in flat.values())
  for config in configs.values():
    num_levels = len(config.rl.step_weights)
    assert config.stages == 'rl'
    # Equal decoder-token budgets for beam and VED rollouts.
    assert config.rollout.ved_budget == beam.decode_cost(
        num_levels, config.rollout.beam_width)
  assert configs['beam_grpo'].rl.sibling_alpha == 0
  assert configs['vstar'].rollout.kind == 'ved'
  assert configs['vstar'].rl.sibling_alpha > 0
  assert configs['vstar'].rl.value_coef > 0
  # vstar and ved_grpo use the superset VED (the chosen preset, B0 = G);
  # the *_paper variants keep the paper-faithful search.
  from vstar_jax.decoding.ved import search  # pylint: disable=g-import-not-at-top
  for variant in ('vstar', 'ved_grpo'):
    sup = configs[variant].rollout
    preset = search.preset('superset', budget=sup.ved_budget,
                           num_candidates=sup.num_candidates)
    assert sup.ved_init_beam == preset.init_beam == sup.num_candidates
    for field, value in rl_recipes.SUPERSET_VED.items():
      assert getattr(preset, field[len('ved_'):]) == value
      assert sup[field] == value
  for variant in rl_recipes.PAPER_VED_VARIANTS:
    rollout = configs[variant].rollout
    paper = search.preset('paper', budget=rollout.ved_budget,
                          num_candidates=rollout.num_candidates)
    assert rollout.kind == 'ved'
    assert rollout.ved_init_beam == paper.init_beam
    for field in rl_recipes.SUPERSET_VED:
      assert rollout[field] == getattr(paper, field[len('ved_'):]), field
  assert configs['vstar_paper'].rl.sibling_alpha > 0
  assert configs['ved_grpo_paper'].rl.sibling_alpha == 0
  # A value loss reaches the trunk only where the rollout reads V: the paper
  # VED does; the superset VED at the beam's budget does not.
  trunk = {v: c.model.value_grad_to_trunk for v, c in configs.items()}
  assert trunk['vstar_paper'] and trunk['ved_grpo_paper']
  assert not trunk['vstar'] and not trunk['ved_grpo']


def test_fresh_protocol_sibling_floor_and_budget_reference():
  fresh = {v: ablation.get_config(f'scientific,{v},fresh')
           for v in ('vstar', 'beam_sibling', 'vstar_paper')}
  assert fresh['vstar'].rl.sibling_min_std == 0.05
  assert fresh['beam_sibling'].rl.sibling_min_std == 0.05
  assert fresh['vstar_paper'].rl.sibling_min_std == 0.0
  assert ablation.get_config('scientific,vstar').rl.sibling_min_std == 0.0
  # --config.rollout.beam_width=24 moves VED's budget with it.
  config = fresh['vstar']
  config.rollout.beam_width = 24
  assert config.rollout.ved_budget == beam.decode_cost(
      len(config.rl.step_weights), 24)


def test_main_job_is_the_fresh_vstar_recipe():
  main = _flatten(default.get_config().to_dict())
  recipe = _flatten(ablation.get_config('default,vstar,fresh').to_dict())
  differ = {k for k in main.keys() | recipe.keys()
            if main.get(k) != recipe.get(k)}
  assert differ == {('stages',), ('ablation',)}
  assert main['stages',] == 'sft,rl' and main['rl', 'learning_rate'] == 3e-5
  assert main['data', 'fresh_windows'] == 1


def test_unknown_variant():
  with pytest.raises(ValueError, match='expected DATASET'):
    ablation.get_config('scientific,ppo')


def test_model_size_rides_on_the_dataset():
  tiger = ablation.get_config('scientific:tiger,vstar,fresh')
  assert (tiger.model.width, tiger.model.num_layers, tiger.model.mlp_ratio) == (
      common.MODEL_SIZES['tiger'][0], common.MODEL_SIZES['tiger'][1],
      common.MODEL_SIZES['tiger'][3])
  assert ablation.get_config('beauty:base,ce').model.width == 512
  assert ablation.get_config('scientific,ce').model.width == 128
  for bad in ('scientific:huge,vstar', 'default:tiger,vstar'):
    with pytest.raises(ValueError, match=r'DATASET\[:SIZE\],VARIANT'):
      ablation.get_config(bad)


def _flatten(d, prefix=()):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def test_fresh_protocol_and_ce_control_read_rl_budget():
  from vstar_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  def parsed(arg):
    config = ablation.get_config(arg)
    config.init_from = '/runs/sft_fresh'    # set by the command line
    return config_lib.parse(config)
  rl, ce = parsed('scientific,vstar,fresh'), parsed('scientific,ce,fresh')
  for cfg in (rl, ce):
    assert cfg.data.fresh_windows == 1 and cfg.eval.validate_start
    assert cfg.eval.valid_subset == 0
    assert cfg.eval.valid_beam == cfg.eval.beam_width
  assert rl.stage_list == ('rl',) and ce.stage_list == ('sft',)
  assert ce.sft.train_on == 'rl_prompts'
  for name in ('num_steps', 'num_epochs', 'batch_size', 'learning_rate',
               'warmup_steps', 'weight_decay', 'grad_clip', 'eval_every',
               'early_stop_patience'):
    assert getattr(ce.sft, name) == getattr(rl.rl, name), name
  # Without 'fresh' nothing of the protocol leaks into the old ablation.
  old = parsed('scientific,vstar')
  assert old.data.fresh_windows == 0 and not old.eval.validate_start


def test_unknown_protocol():
  with pytest.raises(ValueError, match='expected DATASET'):
    ablation.get_config('scientific,vstar,stale')
