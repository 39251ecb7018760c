"""SFT step, checkpoints and the training binary end to end (smoke config)."""
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax import checkpointing
from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.models import policy
from vstar_jax.train import loop
from vstar_jax.train import sft
from vstar_jax.train import state as state_lib


@pytest.fixture(scope='module')
def toy(smoke_config):
  config = smoke_config()
  exp = experiment.load_experiment(config)
  net = policy.PolicyValueNet(config_lib.policy_config(
      config, num_levels=exp.num_levels, vocab_size=exp.vocab_size,
      num_items=exp.dataset.num_items))
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


@pytest.mark.slow
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


def test_token_nll_label_smoothing_matches_numpy():
  # Two examples, two levels, four codes; invalid codes vary per row.
  valid = np.array([[[1, 1, 0, 1], [0, 1, 1, 0]],
                    [[1, 1, 1, 1], [1, 0, 0, 0]]], bool)
  logits = np.random.default_rng(0).normal(size=valid.shape).astype(
      np.float32)
  target = np.array([[3, 2], [0, 0]], np.int32)
  logp = policy.masked_log_softmax(jnp.asarray(logits), jnp.asarray(valid))
  want = np.zeros(target.shape, np.float32)
  for b, l in np.ndindex(*target.shape):
    ok = valid[b, l]
    row = logits[b, l, ok] - np.log(np.exp(logits[b, l, ok]).sum())
    soft = np.full(ok.sum(), 0.1 / ok.sum())      # eps over valid codes
    soft[np.flatnonzero(ok) == target[b, l]] += 0.9
    want[b, l] = -(soft * row).sum()
  got = sft.token_nll(logp, jnp.asarray(target), jnp.asarray(valid), 0.1)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # eps = 0: the plain NLL; a single valid code: nothing to smooth over.
  plain = -np.take_along_axis(np.asarray(logp), target[..., None], -1)[..., 0]
  np.testing.assert_array_equal(
      sft.token_nll(logp, jnp.asarray(target), jnp.asarray(valid), 0.0),
      plain)
  np.testing.assert_allclose(got[1, 1], plain[1, 1], atol=1e-6)


def test_label_smoothing_zero_is_the_nll_and_positive_is_logged(toy):
  _, exp, net, batch = toy
  params = _state(net).params
  loss = lambda eps: sft.sft_loss(params, batch, exp.trie, jax.random.key(0),
                                  net=net, constrained=True,
                                  label_smoothing=eps, train=False)
  plain, plain_metrics = loss(0.0)
  codes = jnp.take(exp.trie.codes, batch['target'], axis=0)
  logits, _ = net.apply({'params': params},
                        jnp.take(exp.trie.codes, batch['history'], axis=0),
                        batch['history_mask'], codes, with_value=False,
                        history_items=batch['history'])
  logp = policy.masked_log_softmax(
      logits, sft.target_valid_masks(exp.trie, batch['target']))
  nll = -jnp.take_along_axis(logp, codes[..., None], -1).sum((1, 2)).mean()
  np.testing.assert_allclose(plain, nll, rtol=1e-6)
  assert 'nll' not in plain_metrics
  smoothed, metrics = loss(0.1)
  np.testing.assert_allclose(metrics['nll'], plain, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], smoothed)
  assert np.isfinite(smoothed) and smoothed != plain


@pytest.mark.slow
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


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(tmp_path, smoke_config, sft_losses):
  full = loop.train_and_evaluate(smoke_config(), str(tmp_path / 'full'))
  part = tmp_path / 'part'
  first = loop.train_and_evaluate(smoke_config(stop_after_steps=4),
                                  str(part))
  assert first['stages']['sft'] == {'steps': 4, 'interrupted': True}
  assert not (part / 'results.json').exists()
  resumed = loop.train_and_evaluate(smoke_config(), str(part))
  assert resumed['metrics'] == full['metrics']
  # Its wall time counts the first process's training too.
  carried = resumed['stages']['sft']['resumed_train_time_s']
  assert full['stages']['sft']['resumed_train_time_s'] == 0.0 < carried
  assert resumed['timings']['wall_s'] > carried + resumed['timings'][
      'sft_eval_s']['test']
  assert sft_losses(part) == sft_losses(tmp_path / 'full')
  # A hard kill (no SIGTERM) of a run from a trained start, after its step-0
  # best/ save and before any latest/ one: the rerun starts over and saves
  # step 0 again (orbax refuses a step that exists).
  cont = tmp_path / 'cont'
  cont_config = lambda **kw: smoke_config(
      init_from=str(part), **{'eval.validate_start': True}, **kw)
  loop.train_and_evaluate(cont_config(stop_after_steps=1), str(cont))
  best = cont / 'checkpoints' / 'sft' / 'best'
  assert '0' in [p.name for p in best.iterdir()]
  shutil.rmtree(cont / 'checkpoints' / 'sft' / 'latest')
  rerun = loop.train_and_evaluate(cont_config(), str(cont))
  best_step = rerun['stages']['sft']['best_step']
  assert [p.name for p in best.iterdir() if p.name.isdigit()] == [
      str(best_step)]


@pytest.mark.slow
def test_binary_smoke_and_bad_config(tmp_path, repo_root):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  cmd = [sys.executable, '-m', 'launch.train',
         '--config=launch/configs/smoke.py', f'--workdir={tmp_path / "w"}']
  out = subprocess.run(cmd, cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((tmp_path / 'w' / 'results.json').read_text())
  assert set(results['metrics']['sft']) == {'valid', 'test'}
  assert 0.0 <= results['metrics']['sft']['test']['ndcg@10'] <= 1.0
  assert results['eval']['beam_width'] == 20
  assert '| sft | test |' in out.stdout
  # The run re-evaluates and recommends from its own work directory.
  ev = subprocess.run([sys.executable, '-m', 'launch.evaluate',
                       f'--workdir={tmp_path / "w"}'], cwd=repo_root,
                      env=env, capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-2000:]
  again = json.loads((tmp_path / 'w' / 'eval_sft_beam20.json').read_text())
  assert again['metrics'] == results['metrics']['sft']
  rec = subprocess.run([sys.executable, '-m', 'launch.recommend',
                        f'--workdir={tmp_path / "w"}', '--user=3',
                        '--top_k=5'], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=300)
  assert rec.returncode == 0, rec.stderr[-2000:]
  assert rec.stdout.count('Toy item') == 5 + 5   # history tail + top 5
  bad = subprocess.run(cmd[:-1] + [f'--workdir={tmp_path / "b"}',
                                   '--config.model.num_heads=3'],
                       cwd=repo_root, env=env, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1] == (
      'train: error: config.model.width=32 is not divisible by '
      'config.model.num_heads=3')
  assert not (tmp_path / 'b').exists()


def test_colliding_index_is_rejected(tmp_path, repo_root, smoke_config):
  import shutil  # pylint: disable=g-import-not-at-top
  src = repo_root / 'testdata' / 'synthetic'
  for name in ('toy.inter.json', 'toy.item.json'):
    shutil.copy(src / name, tmp_path / name)
  index = json.loads((src / 'toy.index.json').read_text())
  index['1'] = index['0']                      # items 0 and 1 collide
  (tmp_path / 'toy.index.json').write_text(json.dumps(index))
  paths = {'data.dir': str(tmp_path),
           'data.index': str(tmp_path / 'toy.index.json')}
  with pytest.raises(errors.ConfigError, match='2 items share an SID'):
    experiment.load_experiment(smoke_config(**paths))
  with pytest.raises(errors.ConfigError, match='sid_collisions'):
    smoke_config(**paths, **{'data.sid_collisions': 'bogus'})
  # TIGER's remedy: one more level, so both items stay distinct and reachable.
  exp = experiment.load_experiment(
      smoke_config(**paths, **{'data.sid_collisions': 'extra_level'}))
  original = exp.dataset.sids
  assert exp.codes.shape == (original.shape[0], original.shape[1] + 1)
  np.testing.assert_array_equal(exp.codes[:, :-1], original)
  assert exp.codes[0, -1] != exp.codes[1, -1]
  assert len({tuple(row) for row in exp.codes}) == exp.codes.shape[0]


def test_init_from_must_build_the_same_network(tmp_path, smoke_config):
  config = smoke_config(**{'stages': 'rl', 'init_from': str(tmp_path)})
  with pytest.raises(errors.ConfigError, match=r'config.json: not found; is '
                     r'config.init_from=.* a launch.train work directory'):
    loop.check_same_model(config, str(tmp_path))
  saved = config.to_dict()
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  loop.check_same_model(config, str(tmp_path))
  saved['model']['dropout_rate'] = 0.5            # no parameter shape
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  loop.check_same_model(config, str(tmp_path))
  saved['model']['num_layers'] = 6
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  with pytest.raises(errors.ConfigError,
                     match=r"^config.model.num_layers=1, but config.init_from="
                           r".* was trained with 6: use its model size"):
    loop.prepare_run(config, str(tmp_path / 'rl'))
  assert not (tmp_path / 'rl').exists()
