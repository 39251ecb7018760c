"""The jitted V-STAR step: one trace across steps (warm-up included),
finite updates, and every rollout kind through the same step."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import conftest
from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.train import state as state_lib

CFG = policy.PolicyConfig(num_levels=3, vocab_size=4, max_history=4,
                          width=16, num_layers=1, num_heads=2,
                          dropout_rate=0.0, value_width=8,
                          mlp_ratio=4, value_grad_to_trunk=True,
                          dtype='float32')


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  sids, trie = conftest.random_catalogue(rng, 4, 3, 40)
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


# Beam and sampling rollouts feed the same loss (tests/rollout_test.py checks
# their groups); the whole step is compiled here once, with VED.
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
  chex.assert_tree_all_finite((state.params, m0, m1))
  assert int(state.step) == 2


def test_policy_loss_gradient_raises_rewarded_token(setup):
  trie, params, emb, batch = setup
  net = policy.PolicyValueNet(CFG)
  b = batch(2)
  # A hand-made group: candidate 0 is the target, the others are not.
  num_items = trie.num_items
  items = (b['target'][:, None] + jnp.arange(4)[None]) % num_items
  codes = jnp.take(trie.codes, items, axis=0)
  cands = types.Candidates(
      items=items, codes=codes, logp=jnp.zeros((4, 4)),
      value=jnp.zeros((4, 4)), evaluated=jnp.zeros((4, 4), bool),
      mask=jnp.ones((4, 4), bool),
      cost=jnp.zeros(4, jnp.int32))
  cfg = rl_step_lib.RLConfig(reward='exact', sibling_alpha=0.0,
                             kl_beta=0.0, value_coef=0.0,
                             grpo_weight=1.0, sibling_min_std=0.0,
                             clip_eps=0.2, updates_per_rollout=1, gamma=0.99,
                             step_weights=(0.3, 0.5, 1.0),
                             value_warmup_steps=0)
  loss = lambda p: rl_step_lib.rl_loss(p, params, b, cands, emb, trie,
                                       jnp.float32(1.), net=net, cfg=cfg)[0]
  grads = jax.jit(jax.grad(loss))(params)
  chex.assert_tree_all_finite(grads)
  new = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)

  @jax.jit
  def target_logp(p):
    return rl_step_lib._teacher_forced(  # pylint: disable=protected-access
        net, p, trie, b['history'], b['history_mask'], codes)[0][:, 0].sum()
  assert float(target_logp(new)) > float(target_logp(params))
