"""Rollouts on the transformer policy: valid groups, exact costs, and VED's
cached node evaluations equal teacher forcing of the same prefixes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.bench import rollout_compare
from vstar_jax.decoding import transformer
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.sid import trie as trie_lib
from tests import toys

CFG = toys.policy_config(vocab_size=5, width=32)


@pytest.fixture(scope='module')
def setup(random_catalogue):
  rng = np.random.default_rng(0)
  sids, trie = random_catalogue(rng, 5, 3, 70)
  params = jax.jit(policy.init_params, static_argnums=0)(
      CFG, jax.random.key(0))
  history = jnp.asarray(rng.integers(0, len(sids), (3, 4)), jnp.int32)
  mask = jnp.ones((3, 4), bool).at[0, :2].set(False)
  return sids, trie, params, history, mask


def _run(setup, cfg):
  sids, trie, params, history, mask = setup
  net = policy.PolicyValueNet(CFG)
  fn = jax.jit(functools.partial(rollout_lib.rollout, net, cfg=cfg))
  return fn(params, trie, jax.random.key(1), history, mask)


@pytest.mark.parametrize('kind', ['ved', 'beam', 'sample'])
def test_groups_valid_and_costs(setup, kind):
  sids = setup[0]
  cfg = rollout_lib.RolloutConfig(
      kind=kind, num_candidates=6, beam_width=8,
      ved=search.VedConfig(budget=20, init_beam=2, num_candidates=6,
                           lam=0.1, beta=1.0, temperature=1.0),
      temperature=1.0)
  cands = _run(setup, cfg)
  items = np.asarray(cands.items)
  mask = np.asarray(cands.mask)
  assert mask.all()
  for b in range(3):
    np.testing.assert_array_equal(np.asarray(cands.codes[b]), sids[items[b]])
    if kind != 'sample':
      assert len(set(items[b])) == 6
  want = {'ved': 20, 'beam': 1 + 2 * 8, 'sample': 1 + 2 * 6}[kind]
  if kind == 'ved':
    assert (np.asarray(cands.cost) <= want).all()
  else:
    assert (np.asarray(cands.cost) == want).all()
  assert np.isfinite(np.asarray(cands.logp)).all()


@pytest.mark.slow
def test_ved_node_values_equal_teacher_forcing(setup):
  _, trie, params, history, mask = setup
  net = policy.PolicyValueNet(CFG)
  hist_codes = jnp.take(trie.codes, history, axis=0)

  @jax.jit
  def run(params):
    ctx = net.apply({'params': params}, hist_codes, mask,
                    method=net.encode_history)
    return search.ved_search(
        transformer.transformer_evaluator(net), params, jax.random.key(2),
        ctx, trie=trie, cache_like=transformer.node_cache_like(net, ctx),
        cfg=search.VedConfig(budget=20, init_beam=2, num_candidates=6,
                             lam=0.1, beta=1.0, temperature=1.0))
  cands, _ = run(params)

  @jax.jit
  def teacher_forced(params, cands):
    """Values and constrained log-probs of every candidate's SID."""
    rep = lambda x: jnp.repeat(x, 6, axis=0)
    codes = cands.codes.reshape(18, 3)
    logits, values = net.apply({'params': params}, rep(hist_codes),
                               rep(mask), codes)
    prefixes = trie.item_prefix_idx[cands.items.reshape(18)]
    valid = jnp.stack([trie_lib.valid_next_mask(trie, l, prefixes[:, l])
                       for l in range(3)], 1)
    logp = policy.masked_log_softmax(logits, valid)
    tok = jnp.take_along_axis(logp, codes[..., None], -1)[..., 0].sum(-1)
    return values[:, -1].reshape(3, 6), tok.reshape(3, 6)

  values, logp = teacher_forced(params, cands)
  evaluated = np.asarray(cands.evaluated)
  assert evaluated.any()
  np.testing.assert_allclose(np.asarray(cands.value)[evaluated],
                             np.asarray(values)[evaluated], atol=1e-4)
  np.testing.assert_allclose(np.asarray(cands.logp), np.asarray(logp),
                             atol=1e-4)


@pytest.mark.slow
def test_compare_rollouts_at_equal_budget(setup):
  sids, trie, params, history, mask = setup
  net = policy.PolicyValueNet(CFG)
  prompts = rollout_compare.Prompts(
      history=np.asarray(history), history_mask=np.asarray(mask),
      target=np.asarray(history[:, -1]))
  # The walk's groups are checked against beam search in
  # test_superset_ved_at_beam_budget_is_beam_search, and the value and mixed
  # rankings of the superset's candidates in ved_test (each VED method here
  # compiles a search per budget).
  methods = ('beam', 'sample', 'ved_sup_logp_tree')
  rows = rollout_compare.compare(
      net, params, trie, prompts, np.zeros(len(sids), bool), budgets=[9, 13],
      methods=methods, num_candidates=4, temperature=1.0, lam=0.1, beta=1.0,
      batch_size=3, reward='ranking', seed=0)
  by_method = {(r['method'], r['budget']): r for r in rows}
  assert set(by_method) == {(m, b) for m in methods for b in (9, 13)}
  assert by_method['beam', 13]['rollout_cost'] == 13   # width 6: 1 + 2 * 6
  # At beam-4's budget the superset VED with log-prob ranking is beam-4.
  sup = by_method['ved_sup_logp_tree', 9]
  assert sup['found_outside_beam'] == sup['beam_found_lost'] == 0
  assert sup['rollout_cost'] == 9 and sup['iterations'] == 0
  for m in methods[2:]:
    ved = by_method[m, 13]
    assert ved['rollout_cost'] <= 13
    assert 0 < ved['complete_leaves']
    assert max(ved['target_top_g_by_value'], ved['target_top_g_by_logp'],
               ved['target_top_g_by_mixed']) <= ved['target_in_tree']
    assert 0 <= ved['value_auc'] <= 1
  for r in rows:
    assert 0 < r['unique_items'] <= 4
    assert 0 <= r['zero_adv_frac'] <= 1
    assert r['ms_per_prompt'] > 0
  # The budget must fit G candidates for beam and sampling.
  with pytest.raises(ValueError, match='width'):
    rollout_compare.rollout_config('beam', 5, num_levels=3, num_candidates=4,
                                   temperature=1., lam=.1, beta=1.)


def test_superset_ved_at_beam_budget_is_beam_search(setup):
  """B0 = G, no leaf evaluation, log-prob ranking: at beam-G's budget the
  group is beam-G's (same items, same order); with more budget every
  candidate's log-prob is at least that of beam-G's at the same rank."""
  from vstar_jax.decoding import beam  # pylint: disable=g-import-not-at-top
  sids, trie, params, history, mask = setup
  net = policy.PolicyValueNet(CFG)
  g = 4
  want = beam.beam_candidates(net, params, trie, history, mask,
                              beam_width=g, num_candidates=g)
  # At beam-G's budget the search never selects: one selection suffices.
  for budget, selections in ((beam.decode_cost(3, g), search.SELECTIONS[:1]),
                             (24, search.SELECTIONS)):
    for selection in selections:
      cfg = search.preset('superset', budget=budget, num_candidates=g,
                          selection=selection, nodes_per_iter=2)
      cands, tree = jax.jit(functools.partial(
          transformer.ved_decode, net, cfg=cfg))(
              params, trie, jax.random.key(2), history, mask)
      assert (np.asarray(cands.cost) <= budget).all()
      if budget == beam.decode_cost(3, g):
        np.testing.assert_array_equal(np.asarray(cands.items),
                                      np.asarray(want.items))
        assert (np.asarray(tree.iterations) == 0).all()
      else:
        assert (np.asarray(cands.cost) > beam.decode_cost(3, g)).all()
        assert (np.asarray(cands.logp) >=
                np.asarray(want.logp) - 1e-5).all()


@pytest.mark.slow
def test_value_block_skipped_only_where_unread(setup):
  """The superset preset reads V only at expandable depths, and only when
  it explores: skipping it elsewhere changes no tree and no group
  (diagnose_values=True evaluates V on every node)."""
  _, trie, params, history, mask = setup
  net = policy.PolicyValueNet(CFG)
  for budget, explores in ((9, False), (15, True)):   # beam-4 costs 9
    trees = {}
    for diagnose in (False, True):
      cfg = search.preset('superset', budget=budget, num_candidates=4,
                          nodes_per_iter=2, diagnose_values=diagnose)
      assert cfg.evaluates_value_at(0, 3) == (explores or diagnose)
      trees[diagnose] = jax.jit(functools.partial(
          transformer.ved_decode, net, cfg=cfg))(
              params, trie, jax.random.key(2), history, mask)
    (c_skip, t_skip), (c_all, t_all) = trees[False], trees[True]
    for name in ('items', 'codes', 'logp', 'mask', 'cost'):
      np.testing.assert_array_equal(getattr(c_skip, name),
                                    getattr(c_all, name))
    for name in ('code', 'parent', 'prefix', 'live', 'visits', 'iterations'):
      np.testing.assert_array_equal(getattr(t_skip, name),
                                    getattr(t_all, name))
    np.testing.assert_allclose(t_skip.logp, t_all.logp, atol=1e-5)
    live = np.asarray(t_all.live)
    depth = np.asarray(t_all.depth)
    value_skip, value_all = np.asarray(t_skip.value), np.asarray(t_all.value)
    assert (value_all[live] != 0).all()           # the diagnose run has V
    # Exploration calls mix depths and evaluate V on all their nodes; the
    # init's depth-(L-1) nodes (slots 5..8 after the root and depth 1) not.
    slot = np.arange(live.shape[1])[None]
    read = (live & ((depth < 2) | (slot >= 9)) if explores
            else np.zeros_like(live))
    np.testing.assert_allclose(value_skip[read], value_all[read], atol=1e-5)
    assert (value_skip[live & ~read] == 0).all()
