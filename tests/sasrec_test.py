"""SASRec: causality, padding, training step, exact top-K, end to end."""
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from launch.configs import sasrec_movielens
from launch.configs import sasrec_tuned
from launch.configs import smoke
from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.models import sasrec
from vstar_jax.train import loop
from vstar_jax.train import recommender
from vstar_jax.train import sasrec_step
from vstar_jax.train import state as state_lib


CFG = sasrec.SasrecConfig(num_items=30, max_history=8, width=16, num_layers=2,
                          num_heads=2, inner_width=32, hidden_dropout_rate=0.1,
                          attn_dropout_rate=0.1)
NET = sasrec.SASRec(CFG)
PARAMS = jax.jit(sasrec.init_params, static_argnums=0)(NET, jax.random.key(0))


def _histories(seed, batch, width=CFG.max_history, min_len=1):
  """Right-aligned random histories with -1 padding. -> [B, T] x2."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, width + 1, batch)
  mask = np.arange(width)[None, :] >= width - lengths[:, None]
  items = rng.integers(0, CFG.num_items, (batch, width))
  return np.where(mask, items, -1).astype(np.int32), mask


_ENCODE = jax.jit(lambda p, h, m: NET.apply({'params': p}, h, m,
                                            method=sasrec.SASRec.encode))
_LOGITS = jax.jit(lambda p, h, m: NET.apply({'params': p}, h, m))


def _encode(history, mask):
  return _ENCODE(PARAMS, jnp.asarray(history), jnp.asarray(mask))


def _logits(history, mask):
  return _LOGITS(PARAMS, jnp.asarray(history), jnp.asarray(mask))


def test_causal_position_ignores_later_items():
  history, mask = _histories(0, 4, min_len=CFG.max_history)
  base = _encode(history, mask)
  for t in range(CFG.max_history - 1):
    changed = history.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 7) % CFG.num_items
    out = _encode(changed, mask)
    np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-5)
    assert np.abs(out[:, t + 1:] - base[:, t + 1:]).max() > 1e-3


def test_padding_contents_and_width_do_not_matter():
  history, mask = _histories(1, 6, width=5)
  garbage = np.where(mask, history, np.arange(5)[None, :] % CFG.num_items)
  base = _logits(history, mask)
  np.testing.assert_allclose(_logits(garbage, mask), base, atol=1e-5)
  # The same histories padded to the full width T = 8.
  wide = np.concatenate([np.full((6, 3), -1, np.int32), history], axis=1)
  wide_mask = np.concatenate([np.zeros((6, 3), bool), mask], axis=1)
  np.testing.assert_allclose(_logits(wide, wide_mask), base, atol=1e-5)
  # A row with no item at all (eval padding) stays finite.
  chex.assert_tree_all_finite(_logits(np.full((1, 8), -1, np.int32),
                                      np.zeros((1, 8), bool)))


def _batch(seed, batch=16):
  history, mask = _histories(seed, batch)
  target = np.random.default_rng(seed + 100).integers(0, CFG.num_items, batch)
  return {'history': jnp.asarray(history), 'history_mask': jnp.asarray(mask),
          'target': jnp.asarray(target, jnp.int32),
          'example_mask': jnp.ones((batch,), bool)}


def test_loss_decreases_one_trace():
  tx = state_lib.make_optimizer(learning_rate=1e-2, total_steps=60,
                                warmup_steps=2, weight_decay=0.0,
                                grad_clip=1.0)
  # A copy: the step donates the state.
  state = state_lib.TrainState.create(jax.tree.map(jnp.copy, PARAMS), tx)
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(n=1)(sasrec_step.make_sasrec_step(NET)),
                 donate_argnums=0)
  batches = [_batch(2), _batch(3)]
  losses = []
  for i in range(60):
    state, metrics = step(state, batches[i % 2], None, jax.random.key(4))
    losses.append(float(metrics['loss']))
    assert np.isfinite(float(metrics['grad_norm']))
  assert losses[0] == pytest.approx(np.log(CFG.num_items), rel=0.05)
  assert losses[-1] < 0.5 * losses[0]


def test_padding_rows_carry_no_weight():
  batch = _batch(5)
  half = dict(batch, example_mask=jnp.arange(16) < 8)
  garbage = dict(half, target=jnp.where(jnp.arange(16) < 8, batch['target'],
                                        (batch['target'] + 1) % 30))
  loss = jax.jit(lambda b: sasrec_step.sasrec_loss(
      PARAMS, b, jax.random.key(0), net=NET, train=False)[0])
  np.testing.assert_allclose(loss(half), loss(garbage), rtol=1e-6)
  assert abs(float(loss(half)) - float(loss(batch))) > 1e-4


def test_top_items_is_exact_top_k():
  history, mask = _histories(6, 5)
  rank = jax.jit(lambda p, h, m: sasrec.top_items(NET, p, h, m, list_len=7))
  out = rank(PARAMS, jnp.asarray(history), jnp.asarray(mask))
  logits = np.asarray(_logits(history, mask))
  order = np.argsort(-logits, axis=1, kind='stable')[:, :7]
  np.testing.assert_array_equal(out.items, order)
  np.testing.assert_allclose(out.scores,
                             np.take_along_axis(logits, order, 1), rtol=1e-6)
  # Seen items are not masked: some lists hold items of their own history,
  # and the comparison above covers them.
  seen = [set(out.items[b].tolist()) & set(history[b][mask[b]].tolist())
          for b in range(5)]
  assert any(seen)


def _toy_config(data_dir, **model):
  config = smoke.get_config()
  config.data.dir = str(data_dir)
  config.data.index = None
  config.model.kind = 'sasrec'
  for key, value in model.items():
    config.model[key] = value
  return config_lib.parse(config)


@pytest.mark.slow
def test_train_and_evaluate_toy_without_sids(tmp_path, repo_root):
  # A copy without toy.index.json: no SIDs anywhere (synthetic data).
  data = tmp_path / 'data'
  data.mkdir()
  shutil.copy(repo_root / 'testdata/synthetic/toy.inter.json', data)
  results = loop.train_and_evaluate(_toy_config(data), str(tmp_path / 'w'))
  assert (tmp_path / 'w' / 'results.json').is_file()
  assert results['stages']['sft']['steps'] == 8
  assert 'NOT masked' in results['eval']['ranking']
  assert results['dataset']['sid_source'] is None
  test = results['metrics']['sft']['test']
  assert test['users'] == 30
  assert 0.0 <= test['ndcg@10'] <= test['hr@10'] <= test['hr@20'] <= 1.0
  assert 0.0 < test['coverage@10'] <= 1.0
  assert 'distinct_l1@10' not in test     # needs SIDs


def test_experiment_sids_optional_for_sasrec_only(tmp_path, repo_root):
  toy = repo_root / 'testdata/synthetic'
  exp = experiment.load_experiment(_toy_config(toy))
  assert exp.trie is None and exp.codes.shape == (40, 3)   # auto-found index
  data = tmp_path / 'data'
  data.mkdir()
  shutil.copy(toy / 'toy.inter.json', data)
  sid_config = _toy_config(data, kind='sid')
  with pytest.raises(errors.ConfigError, match='has no SID index'):
    experiment.load_experiment(sid_config)


def test_movielens_config_builds(repo_root):
  config = sasrec_movielens.get_config()
  config.data.dir = str(repo_root / config.data.dir)
  config = config_lib.parse(config)
  exp = experiment.load_experiment(config)
  model = recommender.from_config(config, exp)
  assert model.kind == 'sasrec' and exp.codes is None
  params = jax.eval_shape(model.init, jax.random.key(0))
  assert params['item_embed']['embedding'].shape == (3496, 64)
  with pytest.raises(errors.ConfigError, match='exceeds the 3496 items'):
    model.make_rank_fn(4000)


# Sampled softmax.

def _numpy_sampled_nll(logits, candidates):
  """Plain-numpy reference: the target against its non-hit negatives."""
  out = []
  for row_logits, row in zip(logits, candidates):
    keep = np.concatenate([[True], row[1:] != row[0]])
    kept = row_logits[keep].astype(np.float64)
    out.append(np.log(np.exp(kept - kept.max()).sum()) + kept.max()
               - row_logits[0])
  return np.array(out)


def test_candidate_logits_and_sampled_nll_match_numpy():
  history, mask = _histories(7, 6)
  rng = np.random.default_rng(8)
  candidates = rng.integers(0, CFG.num_items, (6, 9)).astype(np.int32)
  candidates[:3, 4] = candidates[:3, 0]          # accidental hits
  logits = jax.jit(lambda p, h, m, c: NET.apply(
      {'params': p}, h, m, c, method=sasrec.SASRec.candidate_logits))(
          PARAMS, history, mask, candidates)
  full = np.asarray(_logits(history, mask))
  np.testing.assert_allclose(logits, np.take_along_axis(full, candidates, 1),
                             rtol=1e-5, atol=1e-6)
  # Spread-out logits, so masking a hit visibly changes the loss.
  spread = np.asarray(logits) * 50.0
  nll, _ = sasrec_step.sampled_softmax_nll(jnp.asarray(spread), candidates)
  np.testing.assert_allclose(nll, _numpy_sampled_nll(spread, candidates),
                             rtol=1e-5)


def test_hits_of_the_target_are_masked():
  rng = np.random.default_rng(9)
  candidates = rng.integers(0, 5, (64, 12)).astype(np.int32)
  logits = rng.normal(size=(64, 12)).astype(np.float32)
  hit = (candidates == candidates[:, :1]) & (np.arange(12) > 0)
  assert hit.any() and not hit.all()
  # Whatever a hit column holds, neither the loss nor its gradient sees it.
  loss = jax.jit(lambda l: sasrec_step.sampled_softmax_nll(l, candidates)[0])
  changed = np.where(hit, 1e4, logits)
  np.testing.assert_allclose(loss(changed), loss(logits), rtol=1e-6)
  grad = jax.grad(lambda l: loss(l).sum())(jnp.asarray(logits))
  assert np.all(np.asarray(grad)[hit] == 0)
  assert np.all(np.asarray(grad)[~hit] != 0)


def test_all_catalogue_uniform_negatives_estimate_full_softmax():
  """K = N uniform negatives: E[exp(sampled nll)] = exp(full-softmax nll).

  exp(nll) = (e^{s_t} + sum_k e^{s_k}) / e^{s_t} is linear in the sampled
  terms, and K uniform draws over N items sum to sum_{i != t} e^{s_i} in
  expectation once hits of the target are dropped. Without that masking
  the mean would be larger by K / N.
  """
  num_items, num_draws = 30, 20000
  scores = np.random.default_rng(10).normal(0, 1.5, num_items)
  target = 3
  negatives = sasrec_step.sample_negatives(jax.random.key(11), num_draws,
                                           num_items, num_items)
  candidates = jnp.concatenate(
      [jnp.full((num_draws, 1), target, jnp.int32), negatives], axis=1)
  logits = jnp.asarray(scores, jnp.float32)[candidates]
  nll, _ = jax.jit(sasrec_step.sampled_softmax_nll)(logits, candidates)
  ratio = np.exp(np.asarray(nll, np.float64))
  full_nll = np.log(np.exp(scores).sum()) - scores[target]
  stderr = ratio.std() / np.sqrt(num_draws)
  assert abs(ratio.mean() - np.exp(full_nll)) < 4 * stderr
  assert 8 * stderr < 1.0     # unmasked hits would add K / N = 1 to the mean
  assert np.asarray(negatives).min() >= 0
  assert np.asarray(negatives).max() == num_items - 1


def test_sampled_step_one_trace_replays_negatives_and_learns():
  tx = state_lib.make_optimizer(learning_rate=1e-2, total_steps=60,
                                warmup_steps=2, weight_decay=0.0,
                                grad_clip=1.0, end_lr_ratio=1.0)
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(n=1)(
      sasrec_step.make_sasrec_step(NET, num_negatives=12)), donate_argnums=0)
  fresh = lambda: state_lib.TrainState.create(
      jax.tree.map(jnp.copy, PARAMS), tx)
  batches = [_batch(2), _batch(3)]
  state, losses = fresh(), []
  for i in range(60):
    state, metrics = step(state, batches[i % 2], None, jax.random.key(4))
    losses.append(float(metrics['loss']))
  # At initialisation the target is one of ~13 near-equal candidates.
  assert losses[0] == pytest.approx(np.log(13), rel=0.1)
  assert losses[-1] < 0.5 * losses[0]
  # Same base key and step -> same negatives and dropout -> same loss.
  _, again = step(fresh(), batches[0], None, jax.random.key(4))
  assert float(again['loss']) == losses[0]
  _, other = step(fresh(), batches[0], None, jax.random.key(5))
  assert float(other['loss']) != losses[0]


def test_sampled_loss_reads_no_catalogue_wide_logits():
  """The sampled loss scores B x (1 + K) items, not B x N."""
  batch = _batch(12)
  jaxpr = jax.make_jaxpr(lambda p: sasrec_step.sasrec_loss(
      p, batch, jax.random.key(0), net=NET, num_negatives=4)[0])(PARAMS)
  shapes = {tuple(v.aval.shape) for eqn in jaxpr.jaxpr.eqns
            for v in eqn.outvars}
  assert (16, 5) in shapes and (16, CFG.num_items) not in shapes


def test_constant_schedule_after_warmup():
  schedule = state_lib.warmup_cosine(1e-3, 100, 10, end_ratio=1.0)
  assert float(schedule(0)) == 0.0
  assert all(float(schedule(s)) == pytest.approx(1e-3, rel=1e-6)
             for s in (10, 50, 99, 100))


def test_sasrec_loss_fields_checked():
  config = config_lib.parse(sasrec_tuned.get_config('scientific,50'))
  assert (config.sasrec.loss, config.sasrec.num_negatives) == ('sampled', 256)
  for field, value in [('loss', 'bpr'), ('negative_sampling', 'popularity'),
                       ('num_negatives', 0)]:
    bad = sasrec_tuned.get_config('scientific,50')
    bad.sasrec[field] = value
    with pytest.raises(errors.ConfigError,
                       match=f'config.sasrec.{field}={value!r}'):
      config_lib.parse(bad)


@pytest.mark.parametrize('arg', ['scientific,20', 'beauty,50'])
def test_tuned_configs(arg, repo_root):
  config = sasrec_tuned.get_config(arg)
  assert config.data.max_history == int(arg.split(',')[1])
  assert (config.model.num_layers, config.model.num_heads) == (1, 1)
  assert config.sft.end_lr_ratio == 1.0
  assert (repo_root / config.data.dir).is_dir()
  assert config.sasrec.loss == 'sampled'
  assert sasrec_tuned.get_config(f'{arg},full').sasrec.loss == 'full'
  for bad in (arg.replace(',', ',x'), f'{arg},bpr', f'{arg},full,x'):
    with pytest.raises(ValueError, match=r'DATASET,HISTORY\[,LOSS\]'):
      sasrec_tuned.get_config(bad)
