"""Policy/value network: teacher forcing equals incremental decoding."""
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.models import policy
from tests import toys

CFG = toys.policy_config(vocab_size=8, max_history=6, width=32, num_layers=2,
                         num_heads=4, value_width=16)


def _batch(seed=0, batch=3):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, CFG.vocab_size, (batch, CFG.max_history, 3))
  mask = np.ones((batch, CFG.max_history), bool)
  mask[0, :2] = False    # left padding
  mask[1, 4:] = False    # right padding
  target = rng.integers(0, CFG.vocab_size, (batch, 3))
  return (jnp.asarray(codes, jnp.int32), jnp.asarray(mask),
          jnp.asarray(target, jnp.int32))


@pytest.fixture(scope='module')
def params():
  return jax.jit(policy.init_params, static_argnums=0)(CFG, jax.random.key(0))


def test_shapes_and_finite(params):
  hist, mask, target = _batch()
  net = policy.PolicyValueNet(CFG)
  logits, values = jax.jit(net.apply)({'params': params}, hist, mask, target)
  chex.assert_shape(logits, (3, 3, CFG.vocab_size))
  chex.assert_shape(values, (3, 4))
  chex.assert_tree_all_finite((logits, values))


@pytest.mark.slow
def test_incremental_decode_matches_teacher_forcing(params):
  hist, mask, target = _batch(1)
  net = policy.PolicyValueNet(CFG)
  variables = {'params': params}
  tf_logits, tf_values = jax.jit(net.apply)(variables, hist, mask, target)
  ctx = jax.jit(functools.partial(net.apply, method='encode_history'))(
      variables, hist, mask)
  decode = jax.jit(functools.partial(net.apply, method='decode'))
  batch = hist.shape[0]
  path = policy.empty_path(CFG, batch, 1, 1)
  codes_seq = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), target], 1)
  for depth in range(CFG.num_levels + 1):
    codes = codes_seq[:, depth][:, None, None]
    depths = jnp.full_like(codes, depth)
    out = decode(variables, ctx, codes, depths, path)
    if depth < CFG.num_levels:
      np.testing.assert_allclose(out.logits[:, 0, 0], tf_logits[:, depth],
                                 atol=1e-4)
    np.testing.assert_allclose(out.value[:, 0, 0], tf_values[:, depth],
                               atol=1e-4)
    p = depth + 1
    path = policy.Path(
        k=jnp.concatenate([path.k, out.k], axis=3),
        v=jnp.concatenate([path.v, out.v], axis=3),
        mask=jnp.ones((batch, 1, 1, p), bool))


def test_padding_is_ignored(params):
  hist, mask, target = _batch(2)
  net = policy.PolicyValueNet(CFG)
  apply = jax.jit(net.apply)
  logits, _ = apply({'params': params}, hist, mask, target)
  hist2 = jnp.where(mask[..., None], hist, 7 - hist)  # change padded codes
  logits2, _ = apply({'params': params}, hist2, mask, target)
  np.testing.assert_allclose(logits, logits2, atol=1e-5)


def test_masked_log_softmax_dead_row():
  logits = jnp.array([[1., 2., 3.], [1., 2., 3.]])
  valid = jnp.array([[True, False, True], [False, False, False]])
  logp = policy.masked_log_softmax(logits, valid)
  np.testing.assert_allclose(jnp.exp(logp[0]).sum(), 1.0, rtol=1e-6)
  assert logp[0, 1] == -jnp.inf
  assert bool(jnp.all(logp[1] == -jnp.inf))


HYBRID = dataclasses.replace(CFG, num_items=10)


def _items(seed=0, batch=3):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(0, HYBRID.num_items,
                                  (batch, CFG.max_history)), jnp.int32)


def test_item_id_embedding_changes_encoding_only_when_on(params):
  hist, mask, target = _batch(3)
  items = _items(3)
  other = (items + 1) % HYBRID.num_items
  apply_off = jax.jit(policy.PolicyValueNet(CFG).apply)
  # Off: the ids are not read, and there is no table.
  assert 'item_embed' not in params
  np.testing.assert_array_equal(
      apply_off({'params': params}, hist, mask, target, history_items=items)[0],
      apply_off({'params': params}, hist, mask, target, history_items=other)[0])
  # On: the same non-id parameters plus a table; the ids change the logits,
  # but not through padded positions.
  hybrid = jax.jit(policy.init_params, static_argnums=0)(
      HYBRID, jax.random.key(0))
  chex.assert_shape(hybrid['item_embed'], (HYBRID.num_items, HYBRID.width))
  chex.assert_trees_all_equal(
      {k: v for k, v in hybrid.items() if k != 'item_embed'}, params)
  apply_on = jax.jit(policy.PolicyValueNet(HYBRID).apply)
  logits = apply_on({'params': hybrid}, hist, mask, target,
                    history_items=items)[0]
  assert not np.allclose(
      logits, apply_on({'params': hybrid}, hist, mask, target,
                       history_items=other)[0], atol=1e-5)
  padded_changed = jnp.where(mask, items, other)
  np.testing.assert_allclose(
      logits, apply_on({'params': hybrid}, hist, mask, target,
                       history_items=padded_changed)[0], atol=1e-6)
  # A zero table is the SID-only model.
  zeroed = dict(hybrid, item_embed=jnp.zeros_like(hybrid['item_embed']))
  np.testing.assert_allclose(
      apply_on({'params': zeroed}, hist, mask, target, history_items=items)[0],
      apply_off({'params': params}, hist, mask, target)[0], atol=1e-6)
  with pytest.raises(ValueError, match='needs history_items'):
    apply_on({'params': hybrid}, hist, mask, target)


def test_item_id_embedding_gradient_reaches_seen_rows_only():
  hist, mask, target = _batch(4)
  items = _items(4)
  hybrid = policy.init_params(HYBRID, jax.random.key(1))
  net = policy.PolicyValueNet(HYBRID)

  def loss(p):
    logits, values = net.apply({'params': p}, hist, mask, target,
                               history_items=items)
    return jnp.sum(logits ** 2) + jnp.sum(values ** 2)

  grad = jax.jit(jax.grad(loss))(hybrid)['item_embed']
  row_norm = np.linalg.norm(np.asarray(grad), axis=1)
  seen = np.zeros(HYBRID.num_items, bool)
  seen[np.asarray(items)[np.asarray(mask)]] = True
  assert np.all(row_norm[seen] > 0)
  np.testing.assert_array_equal(row_norm[~seen], 0.)
