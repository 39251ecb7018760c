"""vstar_jax.config: every field typed and checked once; bad flags and bad
inputs end launch.train with one line, exit code 1 and an empty work
directory."""
import dataclasses
import importlib
import json
import os
import subprocess
import sys

import pytest

from launch.configs import common
from launch.configs import smoke
from vstar_jax import config as config_lib
from vstar_jax import errors


def _error(**overrides) -> str:
  """parse's message for the smoke config with `overrides`, set in a plain
  dict (a ConfigDict would refuse some types itself)."""
  config = smoke.get_config().to_dict()
  for key, value in overrides.items():
    *path, leaf = key.split('.')
    node = config
    for p in path:
      node = node[p]
    node[leaf] = value
  with pytest.raises(errors.ConfigError) as e:
    config_lib.parse(config)
  return str(e.value)


@pytest.mark.parametrize('name,arg', [
    ('smoke', None), ('default', None), ('scientific', 'tiger'),
    ('beauty', 'base'), ('sasrec_movielens', None),
    ('sasrec_scientific', None), ('sasrec_beauty', None),
    ('ablation', 'scientific,vstar'), ('ablation', 'beauty,beam_grpo'),
    ('tpu_pod', 'base')])
def test_every_config_file_parses(name, arg):
  module = importlib.import_module(f'launch.configs.{name}')
  config = module.get_config(*([arg] if arg else []))
  if config.stages == 'rl':     # RL from an SFT run given on the command line
    config.init_from = 'runs/sft'
  cfg = config_lib.parse(config)
  assert cfg.stage_list[0] in ('sft', 'rl')


def test_values_are_typed(smoke_dict):
  cfg = config_lib.parse(smoke_dict(**{
      'rl.step_weights': [1, 2, 3], 'sft.learning_rate': 1, 'stages': 'sft'}))
  assert cfg.rl.step_weights == (1.0, 2.0, 3.0)
  assert isinstance(cfg.sft.learning_rate, float)
  assert cfg.data.index.endswith('toy.index.json')
  assert config_lib.parse(smoke_dict(**{'data.index': ''})).data.index is None
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.sft.batch_size = 3      # pytype: disable=not-writable


@pytest.mark.parametrize('overrides,message', [
    ({'sft.batch_size': -1}, 'config.sft.batch_size=-1: must be >= 1'),
    ({'sft.batch_size': 2.5}, 'config.sft.batch_size=2.5: expected an int'),
    ({'sft.batch_size': True}, 'config.sft.batch_size=True: expected an int'),
    ({'rollout.kind': 'vedd'},
     "config.rollout.kind='vedd': expected one of 'ved', 'beam', 'sample'"),
    ({'model.dtype': 'float16'},
     "config.model.dtype='float16': expected one of 'float32', 'bfloat16'"),
    ({'rl.reward': 'dense'},
     "config.rl.reward='dense': expected one of 'ranking', 'exact', "
     "'prefix'"),
    ({'rl.updates_per_rollout': 0},
     'config.rl.updates_per_rollout=0: must be >= 1'),
    ({'rl.sibling_min_std': -0.1},
     'config.rl.sibling_min_std=-0.1: must be >= 0.0'),
    ({'rl.gamma': 1.5}, 'config.rl.gamma=1.5: must be in [0.0, 1.0]'),
    ({'mesh.data': 0},
     'config.mesh.data=0: must be >= 1, or -1 (all devices that mesh.model '
     'leaves)'),
    ({'stages': 'sft,rll'},
     "config.stages='sft,rll': expected 'sft', 'rl' or 'sft,rl'"),
    ({'rl.item_embeddings': 'attributes:'},
     "config.rl.item_embeddings='attributes:': expected 'text', "
     "'attributes:PATH' or a .npy path"),
    ({'rl.num_steps': 0, 'rl.num_epochs': 0, 'rl.value_warmup_steps': 0},
     'config.rl.num_steps=0, config.rl.num_epochs=0 and config.rl.'
     'value_warmup_steps=0: set one of them > 0'),
    ({'rl.value_warmup_steps': 5, 'rl.value_coef': 0.0},
     'config.rl.value_warmup_steps=5 trains the value head alone: needs '
     'config.rl.value_coef > 0'),
    ({'model.num_heads': 3},
     'config.model.width=32 is not divisible by config.model.num_heads=3'),
    ({'rollout.kind': 'beam', 'rollout.beam_width': 4},
     'config.rollout.beam_width=4: must be >= config.rollout.num_candidates=6 '
     'for kind=beam'),
    ({'stages': 'rl'},
     "config.init_from='': config.stages='rl' starts from the SFT checkpoint "
     'of a run directory; set config.init_from to one'),
    ({'stages': 'sft,rl', 'model.kind': 'sasrec'},
     "config.stages='sft,rl': config.model.kind='sasrec' has no SID policy "
     "for RL (expected 'sid')"),
    ({'sft.label_smoothing': 1.0},
     'config.sft.label_smoothing=1.0: must be in [0, 1)'),
    ({'sft.label_smoothing': -0.1},
     'config.sft.label_smoothing=-0.1: must be in [0, 1)'),
    ({'model.item_id_embedding': 1},
     'config.model.item_id_embedding=1: expected True or False'),
    ({'model.kind': 'sasrec', 'model.item_id_embedding': True},
     "config.model.item_id_embedding=True: a SID-policy switch; "
     "config.model.kind='sasrec' needs False"),
    ({'model.kind': 'sasrec', 'sft.label_smoothing': 0.1},
     "config.sft.label_smoothing=0.1: a SID-policy switch; "
     "config.model.kind='sasrec' needs 0.0"),
])
def test_bad_values_name_field_and_allowed(overrides, message):
  assert _error(**overrides) == message


def test_value_pretraining_alone_is_a_run(smoke_dict):
  cfg = config_lib.parse(smoke_dict(**{
      'rl.num_steps': 0, 'rl.num_epochs': 0, 'rl.value_warmup_steps': 3}))
  assert cfg.rl.value_warmup_steps == 3 and cfg.rl.num_steps == 0


def test_unknown_and_missing_fields(smoke_dict):
  config = smoke_dict()
  config.sft.batchsize = 3
  with pytest.raises(errors.ConfigError) as e:
    config_lib.parse(config)
  assert str(e.value) == ('config.sft.batchsize: unknown config field; did '
                          'you mean config.sft.batch_size?')
  config = smoke_dict().to_dict()
  del config['rl']['clip_eps']
  with pytest.raises(errors.ConfigError) as e:
    config_lib.parse(config)
  assert str(e.value) == ('config.rl.clip_eps: missing '
                          '(launch/configs/common.py sets every field)')


def test_checks_that_need_the_data(smoke_dict):
  cfg = config_lib.parse(smoke_dict(stages='sft,rl'))
  config_lib.check_levels(cfg, 3)
  with pytest.raises(errors.ConfigError) as e:
    config_lib.check_levels(cfg, 4)
  assert str(e.value) == ('config.rl.step_weights=(0.3, 0.5, 1.0) needs one '
                          'weight per SID level (L=4)')
  # SFT-only runs keep RL's level-dependent fields unchecked.
  config_lib.check_levels(dataclasses.replace(cfg, stages='sft'), 4)
  low = config_lib.parse(smoke_dict(stages='sft,rl',
                                     **{'rollout.ved_budget': 3}))
  with pytest.raises(errors.ConfigError, match='below the init beam cost'):
    config_lib.check_levels(low, 3)


def test_library_configs_take_every_field(smoke_dict):
  cfg = config_lib.parse(smoke_dict(**{
      'rl.updates_per_rollout': 4, 'rl.sibling_min_std': 0.05}))
  rl = config_lib.rl_config(cfg)
  assert (rl.updates_per_rollout, rl.sibling_min_std) == (4, 0.05)
  assert rl.clip_eps == cfg.rl.clip_eps
  rollout = config_lib.rollout_config(cfg, 3)
  # kappa x (1 + (L - 1) B0) = 2 x (1 + 2 x 2) decoder tokens.
  assert rollout.ved.budget == 10 and rollout.ved.init_beam == 2
  net = config_lib.policy_config(cfg, num_levels=3, vocab_size=4,
                                 num_items=40)
  assert (net.width, net.num_heads, net.max_history) == (32, 2, 5)
  assert net.num_items == 0                  # the item-id embedding is off
  hybrid = config_lib.policy_config(
      config_lib.parse(smoke_dict(**{'model.item_id_embedding': True})),
      num_levels=3, vocab_size=4, num_items=40)
  assert hybrid.num_items == 40


def test_saved_config_round_trips_and_old_runs_load(smoke_dict):
  cfg = config_lib.parse(smoke_dict())
  saved = json.loads(json.dumps(cfg.to_dict()))
  assert config_lib.parse_saved(saved, common.base_config()) == cfg
  old = json.loads(json.dumps(cfg.to_dict()))
  old['model']['size'] = 'cpu'            # retired field
  del old['rl']['updates_per_rollout']    # added since
  del old['mesh']
  loaded = config_lib.parse_saved(old, common.base_config())
  assert loaded.rl.updates_per_rollout == 1 and loaded.mesh.data == -1
  old['rl']['clip_epss'] = 0.1
  with pytest.raises(errors.ConfigError, match='config.rl.clip_epss'):
    config_lib.parse_saved(old, common.base_config())


# -- launch.train end to end ---------------------------------------------------


def _write_index(repo_root, path, depth_extra: int):
  index = json.loads(
      (repo_root / 'testdata/synthetic/toy.index.json').read_text())
  for codes in index.values():
    codes.extend(f'<{"defgh"[i]}_0>' for i in range(depth_extra))
  path.write_text(json.dumps(index))


def _bad_flag_cases(repo_root, tmp_path):
  """(flags, XLA device count, expected stderr line) per bad input."""
  deep = tmp_path / 'deep'
  deep.mkdir()
  for name in ('toy.inter.json', 'toy.item.json'):
    (deep / name).write_text(
        (repo_root / 'testdata/synthetic' / name).read_text())
  _write_index(repo_root, deep / 'toy.index.json', 1)
  missing = tmp_path / 'no_such_dir'
  return {
      'negative_batch': (['--config.sft.batch_size=-1'], 1,
                         'config.sft.batch_size=-1: must be >= 1'),
      'unknown_field': (['--config.sft.batchsize=3'], 1,
                        'config.sft.batchsize: unknown config field; did you '
                        'mean config.sft.batch_size?'),
      'bad_enum_unused_stage': (
          ['--config.rollout.kind=vedd'], 1,
          "config.rollout.kind='vedd': expected one of 'ved', 'beam', "
          "'sample'"),
      'batch_not_divisible': (
          ['--config.sft.batch_size=12'], 8,
          'config.sft.batch_size=12 is not divisible by the 8 devices of the '
          'data axis (config.mesh.data)'),
      'missing_data_dir': (
          [f'--config.data.dir={missing}'], 1,
          f'{missing}/toy.inter.json: file not found (nor .gz)'),
      'index_wrong_depth': (
          [f'--config.data.dir={deep}',
           f'--config.data.index={deep}/toy.index.json',
           '--config.stages=sft,rl'], 1,
          'config.rl.step_weights=(0.3, 0.5, 1.0) needs one weight per SID '
          'level (L=4)'),
  }


@pytest.mark.slow
def test_bad_flags_one_line_exit_1_nothing_written(tmp_path, repo_root):
  cases = _bad_flag_cases(repo_root, tmp_path)
  for case, (flags, devices, message) in cases.items():
    workdir = tmp_path / f'work_{case}'
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
        f'--xla_force_host_platform_device_count={devices}'))
    out = subprocess.run(
        [sys.executable, '-m', 'launch.train',
         '--config=launch/configs/smoke.py', f'--workdir={workdir}', *flags],
        cwd=repo_root, env=env, capture_output=True, text=True,
        timeout=300)
    assert out.returncode == 1, (case, out.stderr[-2000:])
    # Log lines may come first; the error is the last line, no traceback.
    assert out.stderr.strip().splitlines()[-1] == f'train: error: {message}', (
        case, out.stderr[-2000:])
    assert 'Traceback' not in out.stderr, case
    assert not workdir.exists() or not any(workdir.iterdir()), case
