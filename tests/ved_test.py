"""VED: equality with the plain-Python reference, invariants, hand cases."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import ved_reference
from vstar_jax.decoding.ved import search
from vstar_jax.decoding.ved import tree as tree_lib
from vstar_jax.sid import trie as trie_lib


def _random_catalogue(seed, num_items, num_levels, vocab):
  assert num_items <= vocab ** num_levels
  rng = np.random.default_rng(seed)
  sids = set()
  while len(sids) < num_items:
    sids.add(tuple(int(x) for x in rng.integers(0, vocab, num_levels)))
  return np.array(sorted(sids), np.int32)


def _run(trie, cfg, key, batch, **toy_kwargs):
  chex.clear_trace_counter()
  evaluator, cache_like = ved_reference.make_toy_evaluator(
      trie.vocab_size, **toy_kwargs)
  @jax.jit
  @chex.assert_max_traces(n=1)
  def fn(trie, key):
    return search.ved_search(evaluator, None, key, None, trie=trie,
                             cache_like=cache_like(batch), cfg=cfg)
  out = fn(trie, key)
  fn(trie, jax.random.fold_in(key, 1))   # new key, same trace
  return out


@pytest.mark.parametrize('last_level', ['dense', 'sparse'])
@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_matches_python_reference(seed, last_level):
  rng = np.random.default_rng(seed)
  num_levels = int(rng.integers(2, 4))
  vocab = int(rng.integers(3, 6))
  num_items = min(int(rng.integers(8, 30)), vocab ** num_levels - 2)
  sids = _random_catalogue(seed, num_items, num_levels, vocab)
  trie = trie_lib.build_trie(sids, vocab_size=vocab, last_level=last_level)
  b0 = int(rng.integers(1, 4))
  cfg = search.VedConfig(
      budget=1 + num_levels * b0 + int(rng.integers(3, 12)), init_beam=b0,
      num_candidates=int(rng.integers(2, 8)), lam=0.1, beta=1.0,
      temperature=float(rng.uniform(0.5, 2.0)))
  batch = 3
  key = jax.random.key(seed)
  cands, tree = _run(trie, cfg, key, batch)
  ref = ved_reference.reference_ved(sids, vocab, cfg, key, batch)
  for b in range(batch):
    r = ref[b]
    n = r['cost']
    assert int(tree.cost[b]) == n
    got_nodes = list(zip(np.asarray(tree.code[b, :n]).tolist(),
                         np.asarray(tree.depth[b, :n]).tolist(),
                         np.asarray(tree.parent[b, :n]).tolist()))
    assert got_nodes == r['nodes']
    assert np.asarray(tree.visits[b, :n]).tolist() == r['visits']
    assert not np.asarray(tree.live[b, n:]).any()
    want = r['candidates']
    mask = np.asarray(cands.mask[b])
    assert mask.sum() == len(want)
    for g, (codes, logp, evaluated) in enumerate(want):
      assert tuple(np.asarray(cands.codes[b, g]).tolist()) == codes
      np.testing.assert_allclose(float(cands.logp[b, g]), logp, rtol=1e-5,
                                 atol=1e-5)
      assert bool(cands.evaluated[b, g]) == evaluated


@pytest.mark.slow
def test_invariants_budget_valid_distinct():
  sids = _random_catalogue(7, 200, 3, 8)
  trie = trie_lib.build_trie(sids, vocab_size=8)
  cfg = search.VedConfig(budget=40, init_beam=4, num_candidates=16,
                         lam=0.1, beta=1.0, temperature=1.0)
  cands, tree = _run(trie, cfg, jax.random.key(3), 5)
  assert (np.asarray(cands.cost) <= cfg.budget).all()
  assert (np.asarray(tree.live).sum(1) == np.asarray(cands.cost)).all()
  sid_to_item = {tuple(s): i for i, s in enumerate(sids.tolist())}
  for b in range(5):
    items = np.asarray(cands.items[b])[np.asarray(cands.mask[b])]
    assert len(set(items.tolist())) == len(items)          # distinct
    for g in range(len(items)):
      codes = tuple(np.asarray(cands.codes[b, g]).tolist())
      assert sid_to_item[codes] == items[g]                  # valid
  chex.assert_tree_all_finite(cands.logp)


def test_single_child_and_tied_values_no_nan():
  # A chain catalogue: every prefix has one valid child, except the root.
  sids = np.array([[0, 0, 0], [1, 0, 0]], np.int32)
  trie = trie_lib.build_trie(sids, vocab_size=3)
  cfg = search.VedConfig(budget=10, init_beam=1, num_candidates=4,
                         lam=0.1, beta=1.0, temperature=1.0)
  cands, tree = _run(trie, cfg, jax.random.key(0), 2, tie_values=True)
  chex.assert_tree_all_finite((tree.value, tree.entropy, cands.logp))
  assert np.asarray(cands.mask).sum(1).tolist() == [2, 2]
  assert (np.asarray(tree.cost) <= 10).all()


@pytest.mark.slow
def test_batch_elements_independent():
  # Each user has its own toy policy; user b's tree must not depend on the
  # other users: the same user keys in a batch of 1 give the same tree.
  sids = _random_catalogue(11, 60, 3, 5)
  trie = trie_lib.build_trie(sids, vocab_size=5)
  cfg = search.VedConfig(budget=25, init_beam=2, num_candidates=6,
                         lam=0.1, beta=1.0, temperature=1.0)
  key = jax.random.key(5)
  _, tree4 = _run(trie, cfg, key, 4)
  ref = ved_reference.reference_ved(sids, 5, cfg, key, 4)
  trees = [r['nodes'] for r in ref]
  assert len({tuple(t) for t in trees}) == 4     # users really differ
  for b in range(4):
    n = ref[b]['cost']
    got = list(zip(np.asarray(tree4.code[b, :n]).tolist(),
                   np.asarray(tree4.depth[b, :n]).tolist(),
                   np.asarray(tree4.parent[b, :n]).tolist()))
    assert got == trees[b]


def _toy_tree(values, entropies, depths, parents, visits, child_valid):
  """A hand-made 1-user tree for selection/gate checks."""
  n = len(values)
  vocab = child_valid.shape[1]
  child_logp = np.where(child_valid, np.log(1.0 / vocab), -np.inf)
  return tree_lib.DecodeTree(
      code=jnp.zeros(n, jnp.int32), depth=jnp.asarray(depths, jnp.int32),
      parent=jnp.asarray(parents, jnp.int32),
      prefix=jnp.zeros(n, jnp.int32), live=jnp.ones(n, bool),
      logp=jnp.zeros(n, jnp.float32),
      value=jnp.asarray(values, jnp.float32),
      entropy=jnp.asarray(entropies, jnp.float32),
      visits=jnp.asarray(visits, jnp.int32),
      child_logp=jnp.asarray(child_logp, jnp.float32),
      child_idx=jnp.full((n, vocab), -1, jnp.int32), cache={},
      cost=jnp.asarray(n, jnp.int32), iterations=jnp.asarray(0, jnp.int32))


def test_selection_and_gate_hand_computed():
  # Root (depth 0) with children a, b, c at depth 1; a has child d (depth 2).
  # G = V + 0.1 H: root 0.1, a 0.5, b 0.3, c 0.7 (wait: c fully expanded).
  values = [0.0, 0.4, 0.3, 0.7, 0.2]
  entropies = [1.0, 1.0, 0.0, 0.0, 0.0]
  depths = [0, 1, 1, 1, 2]
  parents = [-1, 0, 0, 0, 1]
  visits = [5, 2, 1, 1, 1]
  valid = np.ones((5, 2), bool)
  valid[3] = False            # c has no valid children: not expandable
  valid[4] = False            # d is a complete leaf
  tree = _toy_tree(values, entropies, depths, parents, visits, valid)
  node, can, passes = search.select_node(tree, lam=0.1, beta=1.0,
                                         num_levels=2)
  # U = G + sqrt(ln(6) / (N + 1)): root 0.1 + 0.546 = 0.646,
  # a 0.5 + 0.772 = 1.272, b 0.3 + 0.946 = 1.246.
  bonus = lambda n: ved_reference.ucb_bonus(1.0, 5, n)
  assert 0.5 + bonus(2) > 0.3 + bonus(1) > 0.1 + bonus(5)
  assert int(node) == 1 and bool(can)
  # Depth-1 mean of G = (0.5 + 0.3 + 0.7) / 3 = 0.5, so a passes (tie).
  assert bool(passes)
  # Lower a's value: now b wins U (0.3 + .946 vs 0.45 + .772 = 1.222) and
  # b (0.3) is below the depth mean (0.45 + 0.3 + 0.7) / 3 = 0.483.
  values[1] = 0.35
  tree = _toy_tree(values, entropies, depths, parents, visits, valid)
  node, _, passes = search.select_node(tree, lam=0.1, beta=1.0, num_levels=2)
  assert int(node) == 2
  assert not bool(passes)


def test_evaluator_output_shapes_are_checked():
  sids = _random_catalogue(4, 20, 3, 4)
  trie = trie_lib.build_trie(sids, vocab_size=4)
  evaluator, cache_like = ved_reference.make_toy_evaluator(4)

  def bad_value(params, rng_key, inputs):   # value [B, M, 1], not [B, M]
    out = evaluator(params, rng_key, inputs)
    return out.replace(value=out.value[..., None])

  def bad_vocab(params, rng_key, inputs):   # logits over V + 1 codes
    out = evaluator(params, rng_key, inputs)
    return out.replace(logits=jnp.pad(out.logits, ((0, 0), (0, 0), (0, 1))))

  cfg = search.VedConfig(budget=12, init_beam=2, num_candidates=3,
                         lam=0.1, beta=1.0, temperature=1.0)
  for bad in (bad_value, bad_vocab):
    with pytest.raises(AssertionError):
      search.ved_search(bad, None, jax.random.key(0), None, trie=trie,
                        cache_like=cache_like(2), cfg=cfg)


def test_budget_below_init_cost_is_an_error():
  with pytest.raises(ValueError, match='init beam cost'):
    search.VedConfig(budget=10, init_beam=4).validate(3)
  # Without leaf evaluation the init costs 1 + (L - 1) * B0 = 9.
  search.VedConfig(budget=9, init_beam=4, evaluate_leaves=False).validate(3)
  with pytest.raises(ValueError, match='rank'):
    search.VedConfig(budget=30, rank='best').validate(3)
  with pytest.raises(ValueError, match='preset'):
    search.preset('fast', budget=20)


@pytest.mark.parametrize('selection', search.SELECTIONS)
@pytest.mark.parametrize('evaluate_leaves', [True, False])
def test_batched_expansion_invariants(selection, evaluate_leaves):
  """m nodes per iteration: within budget, valid distinct items, and the
  same budget spent in fewer loop iterations than with m = 1."""
  sids = _random_catalogue(7, 200, 3, 8)
  trie = trie_lib.build_trie(sids, vocab_size=8)
  sid_to_item = {tuple(s): i for i, s in enumerate(sids.tolist())}
  iters = {}
  for m in (1, 4):
    cfg = search.VedConfig(budget=40, init_beam=4, num_candidates=8,
                           evaluate_leaves=evaluate_leaves, rank='mixed',
                           selection=selection, normalize_depth=True,
                           nodes_per_iter=m)
    cands, tree = _run(trie, cfg, jax.random.key(3), 5)
    cost = np.asarray(cands.cost)
    assert (cost <= cfg.budget).all()
    assert (np.asarray(tree.live).sum(1) == cost).all()
    if not evaluate_leaves:     # no evaluated node at depth L
      assert not (np.asarray(tree.live) & (np.asarray(tree.depth) == 3)).any()
    for b in range(5):
      mask = np.asarray(cands.mask[b])
      items = np.asarray(cands.items[b])[mask]
      assert mask.all() and len(set(items.tolist())) == len(items)
      for g in range(len(items)):
        codes = tuple(np.asarray(cands.codes[b, g]).tolist())
        assert sid_to_item[codes] == items[g]
    explored = int(cost.max()) - cfg.init_cost(3)
    iters[m] = int(tree.iterations[0])
    assert iters[m] * m >= explored
  assert iters[4] < iters[1]


def test_walk_descends_by_u_and_stops_where_a_new_child_wins():
  # Root (depth 0) -> a, b (depth 1); a -> d (depth 2, leaf level L=2).
  # a has G 0.9 and is fully expanded except through d; b has G 0.1.
  values = [0.0, 0.9, 0.1, 0.5]
  depths = [0, 1, 1, 2]
  parents = [-1, 0, 0, 1]
  valid = np.zeros((4, 2), bool)
  valid[0] = True                  # root: both children in the tree
  valid[1] = [True, True]          # a: child 0 is d, child 1 unexpanded
  valid[2] = [True, False]         # b: one unexpanded child
  tree = _toy_tree(values, [0.] * 4, depths, parents, [4, 2, 1, 1], valid)
  child_idx = np.full((4, 2), -1)
  child_idx[0] = [1, 2]
  child_idx[1, 0] = 3
  tree = tree.replace(child_idx=jnp.asarray(child_idx, jnp.int32))
  cfg = search.VedConfig(budget=10, lam=0., beta=0.1, selection='walk')
  node, ok, _ = search._select_walk(tree, cfg, 2)
  # Root has no unexpanded child: descend to a (0.9 + small bonus beats
  # b's 0.1 + bonus); at a, a new child (valued 0.9, N = 0) beats d, whose
  # subtree cannot expand. So the walk stops at a.
  assert int(node) == 1 and bool(ok)
  # With a large beta, b's bonus (N = 1) beats a's (N = 2): stop at b.
  node, _, _ = search._select_walk(
      tree.replace(visits=jnp.asarray([4, 30, 1, 1], jnp.int32)),
      dataclasses.replace(cfg, beta=5.), 2)
  assert int(node) == 2


@pytest.mark.parametrize('rank', search.RANKINGS)
def test_superset_candidates_are_the_best_of_the_whole_pool(rank):
  """Without leaf evaluation the G candidates are found per parent first;
  they must be the G best of all N * V completions by the rank key (ties
  by log-prob for 'value', then by pool index)."""
  sids = _random_catalogue(5, 150, 3, 8)
  trie = trie_lib.build_trie(sids, vocab_size=8)
  cfg = search.preset('superset', budget=30, num_candidates=6, rank=rank,
                      init_beam=3, rank_weight=0.7)
  cands, tree = _run(trie, cfg, jax.random.key(4), 4)
  for b in range(4):
    tree_b = jax.tree_util.tree_map(lambda x, b=b: x[b], tree)
    items, logp, value, ok = map(np.asarray, search.leaf_pool(
        tree_b, trie, cfg, 3))
    key = np.asarray(search.rank_score(cfg, logp, value))
    tie = logp if rank == 'value' else np.zeros_like(logp)
    pool = np.flatnonzero(ok)
    order = pool[np.lexsort((pool, -tie[pool], -key[pool]))]
    want = items[order[:cfg.num_candidates]]
    mask = np.asarray(cands.mask[b])
    np.testing.assert_array_equal(np.asarray(cands.items[b])[mask], want)
