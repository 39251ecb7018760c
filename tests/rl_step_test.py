"""The jitted V-STAR step: one trace across steps (warm-up included),
finite updates, every rollout kind through the same step, K updates per
rollout (K=1 is one plain on-policy update; from the second the ratio and the
clip act), and the value loss cut off from the trunk on request."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.train import state as state_lib
from tests import toys

CFG = toys.policy_config()


@pytest.fixture(scope='module')
def setup(random_catalogue):
  rng = np.random.default_rng(0)
  sids, trie = random_catalogue(rng, 4, 3, 40)
  params = jax.jit(policy.init_params, static_argnums=0)(
      CFG, jax.random.key(0))
  emb = rng.normal(size=(len(sids), 6)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)

  def batch(seed):
    r = np.random.default_rng(seed)
    return {'history': jnp.asarray(r.integers(0, len(sids), (4, 4)),
                                   jnp.int32),
            'history_mask': jnp.ones((4, 4), bool),
            'target': jnp.asarray(r.integers(0, len(sids), 4), jnp.int32),
            'example_mask': jnp.ones(4, bool)}
  return trie, params, jnp.asarray(emb), batch


def _state(params, warmup):
  tx = state_lib.make_rl_optimizer(
      policy_lr=1e-3, value_lr=1e-3, total_steps=10, warmup_steps=1,
      value_warmup_steps=warmup, weight_decay=0.0, grad_clip=1.0,
      param_labels=rl_step_lib.value_param_label)
  return state_lib.TrainState.create(params, tx)


def _rl_cfg(**overrides) -> rl_step_lib.RLConfig:
  """The objective at launch/configs/common.py's settings, with overrides."""
  fields = dict(reward='ranking', grpo_weight=1.0, sibling_alpha=1.0,
                sibling_min_std=0.0, clip_eps=0.2, updates_per_rollout=1,
                kl_beta=1e-3, value_coef=0.5, gamma=0.99,
                step_weights=(0.3, 0.5, 1.0), value_warmup_steps=0)
  fields.update(overrides)
  return rl_step_lib.RLConfig(**fields)


# Beam and sampling rollouts feed the same loss (tests/rollout_test.py checks
# their groups); the whole step is compiled here once, with VED.
@pytest.mark.slow
@pytest.mark.parametrize('kind', ['ved'])
def test_rl_step_traces_once_and_is_finite(setup, kind):
  trie, params, emb, batch = setup
  net = policy.PolicyValueNet(CFG)
  rollout_cfg = rollout_lib.RolloutConfig(
      kind=kind, num_candidates=4, beam_width=4,
      ved=search.VedConfig(budget=12, init_beam=2, num_candidates=4,
                           lam=0.1, beta=1.0, temperature=1.0),
      temperature=1.0)
  cfg = rl_step_lib.RLConfig(value_warmup_steps=1,
                             reward='ranking', grpo_weight=1.0,
                             sibling_alpha=1.0, sibling_min_std=0.0,
                             clip_eps=0.2, updates_per_rollout=1, kl_beta=1e-3,
                             value_coef=0.5, gamma=0.99,
                             step_weights=(0.3, 0.5, 1.0))
  chex.clear_trace_counter()
  step = jax.jit(chex.assert_max_traces(n=1)(
      rl_step_lib.make_rl_step(net, rollout_cfg, cfg)), donate_argnums=0)
  state = _state(jax.tree_util.tree_map(jnp.copy, params), warmup=1)
  key = jax.random.key(3)
  policy_before = params['head_w']
  state, m0 = step(state, params, batch(0), trie, emb, key)
  # Warm-up step: the policy does not move, the value head does.
  np.testing.assert_array_equal(state.params['head_w'], policy_before)
  assert float(m0['policy_on']) == 0.0
  state, m1 = step(state, params, batch(1), trie, emb, key)
  assert float(m1['policy_on']) == 1.0
  # VED rollouts log how V and log-prob rank the target (AUC in [0, 1]).
  for name in ('value_auc', 'logp_auc', 'mixed_auc'):
    assert 0.0 <= float(m0[f'ved/{name}']) <= 1.0
  chex.assert_tree_all_finite((state.params, m0, m1))
  assert int(state.step) == 2


def _loss_fn(net, params, b, cands, emb, trie, cfg, policy_on=1.0):
  """params -> (loss, metrics) of one on-policy update on `cands`."""
  signal, logp_ref = rl_step_lib.learning_signal(net, params, b, cands, trie,
                                                 emb, cfg=cfg)
  def loss(p):
    value, (metrics, _) = rl_step_lib.rl_loss(
        p, b, cands, signal, logp_ref, jnp.zeros_like(logp_ref),
        jnp.bool_(True), jnp.float32(policy_on), trie, net=net, cfg=cfg)
    return value, metrics
  return loss


def _target_group(trie, b):
  """A hand-made group: candidate 0 is the target, the others are not."""
  items = (b['target'][:, None] + jnp.arange(4)[None]) % trie.num_items
  return types.Candidates(
      items=items, codes=jnp.take(trie.codes, items, axis=0),
      logp=jnp.zeros((4, 4)), value=jnp.zeros((4, 4)),
      evaluated=jnp.zeros((4, 4), bool), mask=jnp.ones((4, 4), bool),
      cost=jnp.zeros(4, jnp.int32))


def test_policy_loss_gradient_raises_rewarded_token(setup):
  trie, params, emb, batch = setup
  net = policy.PolicyValueNet(CFG)
  b = batch(2)
  cands = _target_group(trie, b)
  cfg = _rl_cfg(reward='exact', sibling_alpha=0.0,
                             kl_beta=0.0, value_coef=0.0)
  loss = _loss_fn(net, params, b, cands, emb, trie, cfg)
  grads = jax.jit(jax.grad(lambda p: loss(p)[0]))(params)
  chex.assert_tree_all_finite(grads)
  new = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)

  @jax.jit
  def target_logp(p):
    return rl_step_lib._teacher_forced(  # pylint: disable=protected-access
        net, p, trie, b['history'], b['history_mask'],
        cands.codes)[0][:, 0].sum()
  assert float(target_logp(new)) > float(target_logp(params))


@pytest.mark.parametrize('to_trunk', [False, True])
def test_value_loss_reaches_trunk_only_when_asked(setup, to_trunk):
  trie, params, emb, batch = setup
  net = policy.PolicyValueNet(
      dataclasses.replace(CFG, value_grad_to_trunk=to_trunk))
  b = batch(4)
  loss = _loss_fn(net, params, b, _target_group(trie, b), emb, trie,
                  _rl_cfg())
  # The value loss alone, read from the metrics the loss reports.
  grads = jax.jit(jax.grad(lambda p: loss(p)[1]['value_loss']))(params)
  norms = {k: float(optax.tree.norm(g)) for k, g in grads.items()}
  policy_head = {'final_ln', 'head_w', 'head_b'}
  value_head = {k for k in norms if k.startswith('value_')}
  trunk = set(norms) - policy_head - value_head
  assert trunk >= {'code_embed', 'block_0', 'depth_embed'}
  assert all(norms[k] > 0 for k in value_head)
  assert all(norms[k] == 0 for k in policy_head)
  if to_trunk:
    assert all(norms[k] > 0 for k in trunk), norms
  else:
    assert all(norms[k] == 0 for k in trunk), norms


def _beam_rollout_cfg() -> rollout_lib.RolloutConfig:
  return rollout_lib.RolloutConfig(
      kind='beam', num_candidates=4, beam_width=4, temperature=1.0,
      ved=search.VedConfig(budget=12, init_beam=2, num_candidates=4,
                           lam=0.1, beta=1.0, temperature=1.0))


def _beam_step(k: int, **cfg_kwargs):
  net = policy.PolicyValueNet(CFG)
  rollout_cfg = _beam_rollout_cfg()
  cfg = _rl_cfg(updates_per_rollout=k, **cfg_kwargs)
  return net, cfg, rl_step_lib.make_rl_step(net, rollout_cfg, cfg)


@pytest.fixture(scope='module')
def one_update_step():
  """(net, cfg, jitted K=1 beam step, SGD) compiled once for the module.

  SGD: the update is linear in the gradient (Adam would blow gradient
  round-off on parameters whose true gradient is 0 up to +/- lr). One
  optimizer object, as it is static in the state (a new one retraces).
  clip_eps as in the K=2 test; at K=1 the ratio is 1 and it cannot act.
  """
  net, cfg, step = _beam_step(1, clip_eps=0.05)
  return net, cfg, jax.jit(step), optax.sgd(0.1)


@pytest.mark.slow   # compiles whole RL steps (rollout + K updates)
def test_one_update_per_rollout_is_one_plain_update(setup, one_update_step):
  trie, params, emb, batch = setup
  b, key = batch(5), jax.random.key(7)
  net, cfg, step, sgd = one_update_step
  rollout_cfg = _beam_rollout_cfg()
  state = state_lib.TrainState.create(params, sgd)
  new_state, metrics = step(state, params, b, trie, emb, key)

  @jax.jit
  def plain_update(state):
    # The rollout policy is the current one: the ratio is 1 exactly.
    cands = rollout_lib.rollout(
        net, state.params, trie, jax.random.fold_in(key, state.step),
        b['history'], b['history_mask'], cfg=rollout_cfg)
    grads, m = jax.grad(_loss_fn(net, params, b, cands, emb, trie, cfg),
                        has_aux=True)(state.params)
    return state.apply_gradients(grads), m
  want_state, want = plain_update(state)
  # Close, not equal: two different XLA programs (a scan body and straight
  # code) may fuse reductions differently, 1 ulp apart in a gradient.
  chex.assert_trees_all_close(new_state.params, want_state.params,
                              rtol=1e-5, atol=1e-7)
  for name in want:
    np.testing.assert_allclose(metrics[name], want[name], rtol=1e-5,
                               atol=1e-8, err_msg=name)
  assert float(metrics['ratio_dev']) == 0 and float(metrics['clip_frac']) == 0


@pytest.mark.slow   # compiles whole RL steps (rollout + K updates)
def test_second_update_on_a_rollout_moves_and_clips_the_ratio(
    setup, one_update_step):
  trie, params, emb, batch = setup
  key = jax.random.key(1)
  # A large constant LR, so that one update moves the policy past the clip;
  # one optimizer object, as it is static in the state (a new one retraces).
  tx = optax.adam(0.05)
  adam = lambda: state_lib.TrainState.create(params, tx)
  _, _, step2 = _beam_step(2, clip_eps=0.05)
  chex.clear_trace_counter()
  step2 = jax.jit(chex.assert_max_traces(n=1)(step2))
  state = adam()
  for i in range(2):
    state, m2 = step2(state, params, batch(10 + i), trie, emb, key)
  assert int(state.step) == 2                       # steps count rollouts
  assert int(state.opt_state[0].count) == 4         # updates: K per step
  # The first update of a rollout is on-policy (ratio 1, nothing clipped),
  # so K=2's means come from its second update alone. K=1's metrics are
  # those of the rollout and the parameters before the update, whatever the
  # optimizer: the module's compiled K=1 step (SGD) gives them.
  _, _, step1, sgd = one_update_step
  _, m1 = step1(state_lib.TrainState.create(params, sgd), params, batch(10),
                trie, emb, key)
  _, m2 = step2(adam(), params, batch(10), trie, emb, key)
  assert float(m1['ratio_dev']) == 0 and float(m1['clip_frac']) == 0
  assert float(m2['ratio_dev']) > 0
  assert float(m2['clip_frac']) > 0
  # Rollout statistics: the same rollout in both.
  for name in ('reward', 'target_in_group', 'zero_adv_frac', 'sib_adv_std'):
    assert float(m1[name]) == float(m2[name]), name
