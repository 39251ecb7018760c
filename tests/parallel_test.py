"""Meshes and shardings: 8-device data-parallel and FSDP steps equal the
1-device step and compile once; mesh config errors are one line.

Compile time dominates this module, so the RL step (VED inside, the
costliest) runs only on 1 device and under FSDP, which splits the batch over
'data' exactly as data parallelism does and the parameters on top.
"""
import dataclasses
import functools

import chex
import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from vstar_jax import errors
from vstar_jax import parallel
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.train import loop
from vstar_jax.train import sft
from vstar_jax.train import state as state_lib
from tests import toys

CFG = toys.policy_config(dropout_rate=0.1)
BATCH = 8
# Small enough that the embedding, attention and MLP kernels get split.
FSDP_MIN_SIZE = 64
MESHES = {'one_device': (1, False), 'data_parallel': (8, False),
          'fsdp': (8, True)}
RL_MESHES = ('one_device', 'fsdp')


@pytest.fixture(scope='module')
def toy(random_catalogue):
  rng = np.random.default_rng(0)
  sids, trie = random_catalogue(rng, 4, 3, 40)
  emb = rng.normal(size=(len(sids), 6)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)

  def batch(seed):
    r = np.random.default_rng(seed)
    return {'history': r.integers(0, len(sids), (BATCH, 4)).astype(np.int32),
            'history_mask': np.arange(4)[None] >= r.integers(0, 3, (BATCH, 1)),
            'target': r.integers(0, len(sids), BATCH).astype(np.int32),
            'example_mask': np.arange(BATCH) < BATCH - 1}
  return trie, emb, [batch(0), batch(1)]


def _counted(fn, traces: list):
  """fn, appending to `traces` each time it is traced."""
  @functools.wraps(fn)
  def wrapped(*args):
    traces.append(1)
    return fn(*args)
  return wrapped


def _adamw():
  # eps well above float noise: Adam would scale the ~1e-9 gradients of
  # shift-invariant parameters (the key bias) up to full-size updates.
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-2, eps=1e-3, weight_decay=0.01))


def _setup(name, tx, cfg=CFG):
  num_devices, fsdp = MESHES[name]
  mesh = parallel.make_mesh(jax.devices()[:num_devices], data=-1, model=1)
  state, sharding = parallel.create_sharded(
      lambda key: state_lib.TrainState.create(
          policy.init_params(cfg, key), tx),
      lambda a: parallel.tree_shardings(mesh, a, fsdp=fsdp,
                                        fsdp_min_size=FSDP_MIN_SIZE),
      jax.random.key(0))
  return mesh, state, sharding


def _run_sft(toy, name, cfg):
  trie, _, batches = toy
  mesh, state, sharding = _setup(name, _adamw(), cfg)
  traces = []
  step = loop.jit_sft_step(
      _counted(sft.make_sft_step(policy.PolicyValueNet(cfg)), traces), mesh,
      sharding)
  repl = parallel.replicated(mesh)
  trie, key = parallel.host_to_global((trie, jax.random.key(1)), repl)
  losses = []
  for b in batches:
    state, metrics = step(state, parallel.global_batch(b, mesh), trie, key)
    losses.append(metrics['loss'])
  return state, sharding, np.asarray(losses), len(traces)


def _run_rl(toy, name):
  trie, emb, batches = toy
  tx = optax.multi_transform({'policy': _adamw(), 'value': optax.sgd(0.1)},
                             rl_step_lib.value_param_label)
  mesh, state, sharding = _setup(name, tx)
  reference = jax.jit(lambda p: jax.tree_util.tree_map(lambda x: x * 0.9, p),
                      out_shardings=sharding.params)(state.params)
  rollout_cfg = rollout_lib.RolloutConfig(
      kind='ved', num_candidates=4, beam_width=4,
      ved=search.VedConfig(budget=12, init_beam=2, num_candidates=4,
                           lam=0.1, beta=1.0, temperature=1.0),
      temperature=1.0)
  traces = []
  step = loop.jit_rl_step(_counted(
      rl_step_lib.make_rl_step(policy.PolicyValueNet(CFG), rollout_cfg,
                               rl_step_lib.RLConfig(
                                   reward='ranking', grpo_weight=1.0,
                                   sibling_alpha=1.0, sibling_min_std=0.0,
                                   clip_eps=0.2, updates_per_rollout=1,
                                   kl_beta=1e-3, value_coef=0.5, gamma=0.99,
                                   step_weights=(0.3, 0.5, 1.0),
                                   value_warmup_steps=0)), traces), mesh,
                          sharding)
  repl = parallel.replicated(mesh)
  trie, emb, key = parallel.host_to_global(
      (trie, emb, jax.random.key(3)), repl)
  losses = []
  for b in batches:
    state, metrics = step(state, reference, parallel.global_batch(b, mesh),
                          trie, emb, key)
    losses.append(metrics['loss'])
  return state, sharding, np.asarray(losses), len(traces)


@pytest.fixture(scope='module')
def runs(toy):
  """{'sft'|'rl': {mesh name: (state, shardings, losses [2], traces)}}."""
  # SFT with the hybrid item-id table [N, D] (split over 'data' under FSDP);
  # RL without it, so both policies meet the FSDP mesh.
  hybrid = dataclasses.replace(CFG, num_items=toy[0].num_items)
  return {'sft': {name: _run_sft(toy, name, hybrid) for name in MESHES},
          'rl': {name: _run_rl(toy, name) for name in RL_MESHES}}


def _assert_same_as_one_device(runs, name):
  ref_state, _, ref_losses, _ = runs['one_device']
  state, _, losses, traces = runs[name]
  assert traces == 1                # two steps, one trace
  assert np.all(np.isfinite(losses)) and losses.shape == (2,)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(jax.device_get(state.params),
                              jax.device_get(ref_state.params),
                              rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(jax.device_get(state.opt_state),
                              jax.device_get(ref_state.opt_state),
                              rtol=1e-5, atol=1e-6)
  assert int(state.step) == 2


@pytest.mark.slow
@pytest.mark.parametrize('name', ['data_parallel', 'fsdp'])
def test_sharded_sft_step_equals_one_device(runs, name):
  _assert_same_as_one_device(runs['sft'], name)


@pytest.mark.slow
def test_sharded_rl_step_equals_one_device(runs):
  _assert_same_as_one_device(runs['rl'], 'fsdp')


def _specs(tree):
  return {leaf.sharding.spec for leaf in jax.tree_util.tree_leaves(tree)}


@pytest.mark.slow
def test_state_stays_on_its_shardings(runs):
  assert _specs(runs['sft']['data_parallel'][0]) == {P()}
  for by_mesh in runs.values():
    for state, sharding, _, _ in by_mesh.values():
      chex.assert_trees_all_equal(
          jax.tree_util.tree_map(lambda x: x.sharding, state), sharding)
    # FSDP splits kernels and their Adam moments; small leaves stay whole.
    fsdp_state = by_mesh['fsdp'][0]
    assert P() in _specs(fsdp_state)
    assert len(_specs(fsdp_state.params)) > 1
    kernel_specs = [s for s in _specs(fsdp_state.opt_state) if s != P()]
    assert kernel_specs and all('data' in s for s in kernel_specs)
  item_table = runs['sft']['fsdp'][0].params['item_embed']
  assert 'data' in item_table.sharding.spec


def test_fsdp_spec_picks_largest_divisible_dimension():
  assert parallel.fsdp_spec((16, 64), 8, 64) == P(None, 'data')
  assert parallel.fsdp_spec((64, 12), 8, 64) == P('data')
  assert parallel.fsdp_spec((8, 8, 3), 8, 64) == P(None, 'data')
  assert parallel.fsdp_spec((5, 7, 3), 8, 64) == P()      # none divisible
  assert parallel.fsdp_spec((16, 2), 8, 64) == P()        # below min size
  assert parallel.fsdp_spec((), 8, 0) == P()
  assert parallel.fsdp_spec((64, 64), 1, 64) == P()


def test_make_mesh_shapes_and_errors():
  mesh = parallel.make_mesh(data=-1, model=2)
  assert dict(mesh.shape) == {'data': 4, 'model': 2}
  assert dict(parallel.make_mesh(data=-1, model=1).shape) == {
      'data': 8, 'model': 1}
  cases = {
      'config.mesh.data=3 x config.mesh.model=1 must equal the 8 devices '
      '(-1: all remaining)': dict(data=3, model=1),
      'config.mesh.model=3 must be a positive divisor of the 8 devices':
          dict(data=-1, model=3),
  }
  for message, fields in cases.items():
    with pytest.raises(errors.ConfigError) as e:
      parallel.make_mesh(**fields)
    assert str(e.value) == message


def test_batch_size_must_divide_data_axis():
  mesh = parallel.make_mesh(data=4, model=2)
  parallel.check_batch_size(mesh, 12, 'sft.batch_size')
  with pytest.raises(errors.ConfigError) as e:
    parallel.check_batch_size(mesh, 10, 'sft.batch_size')
  assert str(e.value) == ('config.sft.batch_size=10 is not divisible by the '
                          '4 devices of the data axis (config.mesh.data)')
