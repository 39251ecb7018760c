"""SFT step, checkpoints and the training binary end to end (smoke config)."""
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import conftest
from vstar_jax import errors
from vstar_jax import checkpointing
from vstar_jax import config as config_lib
from vstar_jax import experiment
from vstar_jax.models import policy
from vstar_jax.train import loop
from vstar_jax.train import sft
from vstar_jax.train import state as state_lib


def _smoke_config(**overrides) -> config_lib.RunConfig:
  return config_lib.parse(conftest.smoke_dict(**overrides))


@pytest.fixture(scope='module')
def toy():
  config = _smoke_config()
  exp = experiment.load_experiment(config)
  net = policy.PolicyValueNet(config_lib.policy_config(
      config, num_levels=exp.num_levels, vocab_size=exp.vocab_size))
  batch = {
      'history': jnp.asarray(exp.split.train.history[:16]),
      'history_mask': jnp.asarray(exp.split.train.history_mask[:16]),
      'target': jnp.asarray(exp.split.train.target[:16]),
      'example_mask': jnp.ones((16,), bool),
  }
  return config, exp, net, batch


def _state(net, total_steps=100):
  tx = state_lib.make_optimizer(learning_rate=3e-3, total_steps=total_steps,
                                warmup_steps=2, weight_decay=0.0,
                                grad_clip=1.0)
  params = jax.jit(policy.init_params, static_argnums=0)(
      net.cfg, jax.random.key(0))
  return state_lib.TrainState.create(params, tx)


def test_sft_loss_decreases_one_trace_finite(toy):
  _, exp, net, batch = toy
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(n=1)(sft.make_sft_step(net)),
                 donate_argnums=0)
  state = _state(net)
  key = jax.random.key(1)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch, exp.trie, key)
    losses.append(float(metrics['loss']))
    assert np.isfinite(float(metrics['grad_norm']))
  assert losses[-1] < 0.5 * losses[0]


def test_padding_rows_carry_no_weight(toy):
  _, exp, net, batch = toy
  params = _state(net).params
  half = dict(batch, example_mask=jnp.arange(16) < 8)
  garbage = dict(half, target=jnp.where(jnp.arange(16) < 8, batch['target'],
                                        (batch['target'] + 1) % 40))
  loss = lambda b: sft.sft_loss(params, b, exp.trie, jax.random.key(0),
                                net=net, constrained=True, train=False)[0]
  np.testing.assert_allclose(loss(half), loss(garbage), rtol=1e-6)


def test_checkpoint_roundtrip_identical_next_step(toy, tmp_path):
  _, exp, net, batch = toy
  step = jax.jit(sft.make_sft_step(net))
  key = jax.random.key(2)
  state, _ = step(_state(net), batch, exp.trie, key)
  ckpt = checkpointing.Checkpointer(str(tmp_path / 'ck'))
  ckpt.save(1, state, {'note': 'x'})
  restored, meta = ckpt.restore_latest(_state(net))
  ckpt.close()
  assert meta == {'note': 'x'}
  a, _ = step(state, batch, exp.trie, key)
  b, _ = step(restored, batch, exp.trie, key)
  chex.assert_trees_all_equal(a.params, b.params)
  assert int(b.step) == 2


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return {(r['step'], k): v for r in rows for k, v in r.items()
          if k.startswith('sft/') and not k.split('/')[-1].startswith(
              ('steps_per', 'examples_per', 'eta'))}


def test_resumed_run_equals_uninterrupted(tmp_path):
  full = loop.train_and_evaluate(_smoke_config(), str(tmp_path / 'full'))
  part = tmp_path / 'part'
  first = loop.train_and_evaluate(_smoke_config(stop_after_steps=4),
                                  str(part))
  assert first['stages']['sft'] == {'steps': 4, 'interrupted': True}
  assert not (part / 'results.json').exists()
  resumed = loop.train_and_evaluate(_smoke_config(), str(part))
  assert resumed['metrics'] == full['metrics']
  assert _losses(part) == _losses(tmp_path / 'full')


def test_binary_smoke_and_bad_config(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  cmd = [sys.executable, '-m', 'launch.train',
         '--config=launch/configs/smoke.py', f'--workdir={tmp_path / "w"}']
  out = subprocess.run(cmd, cwd=conftest.REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((tmp_path / 'w' / 'results.json').read_text())
  assert set(results['metrics']['sft']) == {'valid', 'test'}
  assert 0.0 <= results['metrics']['sft']['test']['ndcg@10'] <= 1.0
  assert results['eval']['beam_width'] == 20
  assert '| sft | test |' in out.stdout
  # The run re-evaluates and recommends from its own work directory.
  ev = subprocess.run([sys.executable, '-m', 'launch.evaluate',
                       f'--workdir={tmp_path / "w"}'], cwd=conftest.REPO_ROOT,
                      env=env, capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-2000:]
  again = json.loads((tmp_path / 'w' / 'eval_sft_beam20.json').read_text())
  assert again['metrics'] == results['metrics']['sft']
  rec = subprocess.run([sys.executable, '-m', 'launch.recommend',
                        f'--workdir={tmp_path / "w"}', '--user=3',
                        '--top_k=5'], cwd=conftest.REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert rec.returncode == 0, rec.stderr[-2000:]
  assert rec.stdout.count('Toy item') == 5 + 5   # history tail + top 5
  bad = subprocess.run(cmd[:-1] + [f'--workdir={tmp_path / "b"}',
                                   '--config.model.num_heads=3'],
                       cwd=conftest.REPO_ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      'train: error: config.model.width=32 is not divisible by '
      'config.model.num_heads=3')
  assert not (tmp_path / 'b').exists()


def test_colliding_index_is_rejected(tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  src = conftest.REPO_ROOT / 'testdata' / 'synthetic'
  for name in ('toy.inter.json', 'toy.item.json'):
    shutil.copy(src / name, tmp_path / name)
  index = json.loads((src / 'toy.index.json').read_text())
  index['1'] = index['0']                      # items 0 and 1 collide
  (tmp_path / 'toy.index.json').write_text(json.dumps(index))
  paths = {'data.dir': str(tmp_path),
           'data.index': str(tmp_path / 'toy.index.json')}
  with pytest.raises(errors.ConfigError, match='2 items share an SID'):
    experiment.load_experiment(_smoke_config(**paths))
  with pytest.raises(errors.ConfigError, match='sid_collisions'):
    _smoke_config(**paths, **{'data.sid_collisions': 'bogus'})
  # TIGER's remedy: one more level, so both items stay distinct and reachable.
  exp = experiment.load_experiment(
      _smoke_config(**paths, **{'data.sid_collisions': 'extra_level'}))
  original = exp.dataset.sids
  assert exp.codes.shape == (original.shape[0], original.shape[1] + 1)
  np.testing.assert_array_equal(exp.codes[:, :-1], original)
  assert exp.codes[0, -1] != exp.codes[1, -1]
  assert len({tuple(row) for row in exp.codes}) == exp.codes.shape[0]
