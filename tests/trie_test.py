"""Tests of the device-side prefix trie against a set-based reference."""
import functools

import chex
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.sid import errors
from vstar_jax.sid import trie


def _unique_codes(rng, num_items, num_levels, vocab_size):
  flat = rng.choice(vocab_size ** num_levels, num_items, replace=False)
  return np.stack([(flat // vocab_size ** (num_levels - 1 - l)) % vocab_size
                   for l in range(num_levels)], axis=1).astype(np.int32)


def _reference(codes):
  """Per level: prefix tuple -> (id from the trie, set of next codes)."""
  catalogue = trie.build_trie(codes)
  prefix_idx = np.asarray(catalogue.item_prefix_idx)
  levels = []
  for level in range(codes.shape[1]):
    ids = {}
    for item, row in enumerate(codes.tolist()):
      prefix = tuple(row[:level])
      assert ids.setdefault(prefix, prefix_idx[item, level]) == (
          prefix_idx[item, level])  # one id per prefix
    assert sorted(ids.values()) == list(range(len(ids)))  # dense ids
    by_id = {i: p for p, i in ids.items()}
    nexts = {p: {row[level] for row in codes.tolist()
                 if tuple(row[:level]) == p} for p in ids}
    levels.append((ids, by_id, nexts))
  return catalogue, levels


CASES = [(seed, num_levels, vocab_size)
         for seed, (num_levels, vocab_size) in enumerate(
             [(1, 7), (2, 5), (3, 4), (3, 6), (4, 3), (2, 9)])]


@pytest.mark.parametrize('seed, num_levels, vocab_size', CASES)
def test_masks_and_next_prefix_match_the_reference(
    seed, num_levels, vocab_size):
  rng = np.random.default_rng(seed)
  num_items = min(40, vocab_size ** num_levels - 1)
  codes = _unique_codes(rng, num_items, num_levels, vocab_size)
  catalogue, levels = _reference(codes)
  item_of = {tuple(row): i for i, row in enumerate(codes.tolist())}
  assert catalogue.num_levels == num_levels
  assert catalogue.vocab_size == codes.max() + 1
  for level, (ids, by_id, nexts) in enumerate(levels):
    assert catalogue.num_prefixes[level] == len(ids)
    # Valid ids, the sentinel and out-of-range ids, in a [4, 8] batch.
    prefix_idx = rng.integers(-2, len(ids) + 2, size=(4, 8)).astype(np.int32)
    mask = np.asarray(trie.valid_next_mask(catalogue, level, prefix_idx))
    assert mask.shape == (4, 8, catalogue.vocab_size) and mask.dtype == bool
    code = rng.integers(-1, catalogue.vocab_size + 1, size=(4, 8))
    child = np.asarray(trie.next_prefix(catalogue, level, prefix_idx, code))
    for pos in np.ndindex(4, 8):
      p = int(prefix_idx[pos])
      valid = nexts[by_id[p]] if p in by_id else set()
      assert set(np.flatnonzero(mask[pos]).tolist()) == valid
      if p in by_id and int(code[pos]) in valid:
        extended = by_id[p] + (int(code[pos]),)
        want = (item_of[extended] if level == num_levels - 1
                else levels[level + 1][0][extended])
      else:
        want = -1
      assert child[pos] == want


@pytest.mark.parametrize('seed, num_levels, vocab_size', CASES[1:4])
def test_any_level_lookups_equal_static_levels(seed, num_levels, vocab_size):
  rng = np.random.default_rng(seed)
  codes = _unique_codes(rng, min(40, vocab_size ** num_levels - 1),
                        num_levels, vocab_size)
  catalogue = trie.build_trie(codes)
  # Depths 0..L (L: a complete item, no valid next code) mixed in one batch.
  level = rng.integers(0, num_levels + 1, size=(5, 7)).astype(np.int32)
  prefix_idx = rng.integers(-1, 4, size=(5, 7)).astype(np.int32)
  code = rng.integers(0, catalogue.vocab_size, size=(5, 7)).astype(np.int32)
  mask = np.asarray(jax.jit(trie.valid_mask_any_level)(
      catalogue, level, prefix_idx))
  child = np.asarray(jax.jit(trie.next_prefix_any_level)(
      catalogue, level, prefix_idx, code))
  for pos in np.ndindex(5, 7):
    l = int(level[pos])
    if l == num_levels:
      assert not mask[pos].any() and child[pos] == -1
      continue
    np.testing.assert_array_equal(
        mask[pos], trie.valid_next_mask(catalogue, l, prefix_idx[pos]))
    assert child[pos] == int(trie.next_prefix(catalogue, l, prefix_idx[pos],
                                              code[pos]))


@pytest.mark.parametrize('seed', [0, 1])
def test_every_item_path_leads_to_the_item(seed):
  rng = np.random.default_rng(seed)
  codes = _unique_codes(rng, 50, 3, 5)
  catalogue = trie.build_trie(codes)
  path = np.asarray(trie.walk_prefixes(catalogue, jnp.asarray(codes)))
  np.testing.assert_array_equal(path[:, :-1], catalogue.item_prefix_idx)
  np.testing.assert_array_equal(path[:, -1], np.arange(50))
  np.testing.assert_array_equal(catalogue.codes, codes)
  known = {tuple(r) for r in codes.tolist()}
  others = np.array([r for r in _unique_codes(rng, 100, 3, 5).tolist()
                     if tuple(r) not in known], np.int32)
  assert others.size
  np.testing.assert_array_equal(
      trie.lookup_item(catalogue, jnp.asarray(others)), -1)


def test_mask_gather_traces_once_under_jit():
  rng = np.random.default_rng(0)
  catalogue = trie.build_trie(_unique_codes(rng, 60, 3, 6))
  fn = jax.jit(chex.assert_max_traces(n=1)(
      lambda t, p: trie.valid_next_mask(t, 2, p)))
  for _ in range(3):
    prefix_idx = jnp.asarray(rng.integers(
        0, catalogue.num_prefixes[2], size=(16, 4)), jnp.int32)
    mask = fn(catalogue, prefix_idx)
    chex.assert_shape(mask, (16, 4, 6))
    assert np.all(np.asarray(mask).any(-1))  # real prefixes always continue


def test_sentinel_prefixes_are_dead_and_checks_raise():
  catalogue = trie.build_trie(np.array([[0, 1], [1, 0], [1, 2]], np.int32))
  prefix_idx = np.array([0, -1, 1, 2], np.int32)  # 2 is out of range
  mask = np.asarray(trie.valid_next_mask(catalogue, 1, prefix_idx))
  np.testing.assert_array_equal(
      mask, [[0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(
      trie.next_prefix(catalogue, 1, prefix_idx, np.ones(4, np.int32)),
      [0, -1, -1, -1])
  with pytest.raises(errors.DeadPrefixError,
                     match=r'level 1: prefix_idx\[1\] = -1 .*2 dead'):
    trie.check_prefixes(catalogue, 1, prefix_idx)
  trie.check_prefixes(catalogue, 1, prefix_idx,
                      prefix_mask=np.array([True, False, True, False]))

  checked = jax.jit(checkify.checkify(
      lambda t, p: trie.checked_valid_next_mask(t, 1, p)))
  err, out = checked(catalogue, jnp.asarray(prefix_idx))
  np.testing.assert_array_equal(out, mask)
  with pytest.raises(checkify.JaxRuntimeError,
                     match=r'position 1\) = -1 has no valid continuation'):
    err.throw()
  err, _ = checked(catalogue, jnp.array([0, 1, 1, 0], jnp.int32))
  err.throw()  # all live prefixes continue
  # Without checkify the check is dropped and the mask is unchanged.
  np.testing.assert_array_equal(
      jax.jit(lambda t, p: trie.checked_valid_next_mask(t, 1, p))(
          catalogue, jnp.asarray(prefix_idx)), mask)


def test_build_rejects_collisions_and_bad_codes():
  codes = np.array([[0, 1], [2, 2], [0, 1], [2, 2], [1, 0]], np.int32)
  with pytest.raises(errors.TrieError, match=(
      r'items \[0, 2\] share SID \[0, 1\] \(4 items in colliding SIDs\)')):
    trie.build_trie(codes)
  with pytest.raises(errors.TrieError, match='item 1 has code 2 at level 0'):
    trie.build_trie(np.array([[0, 1], [2, 0]], np.int32), vocab_size=2)
  with pytest.raises(errors.CodesError, match='negative code -1'):
    trie.build_trie(np.array([[0, -1]], np.int32))
  with pytest.raises(errors.CodesError, match='integer'):
    trie.build_trie(np.zeros((2, 2), np.float32))


def test_tables_and_sizes():
  catalogue = trie.build_trie(
      np.array([[0, 1], [1, 0], [1, 2]], np.int32), vocab_size=4)
  assert catalogue.num_prefixes == (1, 2)
  assert catalogue.vocab_size == 4 and catalogue.num_items == 3
  np.testing.assert_array_equal(catalogue.children[0], [[0, 1, -1, -1]])
  np.testing.assert_array_equal(
      catalogue.children[1], [[-1, 0, -1, -1], [1, -1, 2, -1]])
  np.testing.assert_array_equal(catalogue.item_prefix_idx,
                                [[0, 0], [0, 1], [0, 1]])
  assert catalogue.nbytes == 4 * (4 + 8 + 6 + 6)
  assert all(leaf.dtype == jnp.int32 for leaf in jax.tree.leaves(catalogue))


# -- sparse (CSR) last level -------------------------------------------------

def _edge_case_codes(rng, vocab_size):
  """L=3 SIDs with a full parent (V children), single-child parents and
  random ones, shuffled so item order is not the SID order."""
  full = [(0, 0, c) for c in range(vocab_size)]         # max children: V
  single = [(1, c, (3 * c) % vocab_size) for c in range(vocab_size)]  # 1 each
  rows = {tuple(int(x) for x in rng.integers(2, vocab_size, 3))
          for _ in range(4 * vocab_size)}
  codes = np.array(full + single + sorted(rows), np.int32)
  return codes[rng.permutation(len(codes))]


@functools.partial(jax.jit, static_argnums=1)
def _lookups(catalogue, level, prefix_idx, code):
  return (trie.valid_next_mask(catalogue, level, prefix_idx),
          trie.next_prefix(catalogue, level, prefix_idx, code))


def _assert_sparse_equals_dense(codes, rng, vocab_size=None):
  dense = trie.build_trie(codes, vocab_size=vocab_size, last_level='dense')
  sparse = trie.build_trie(codes, vocab_size=vocab_size, last_level='sparse')
  last = dense.num_levels - 1
  assert not isinstance(dense.children[last], trie.SparseLevel)
  assert isinstance(sparse.children[last], trie.SparseLevel)
  assert sparse.num_prefixes == dense.num_prefixes
  assert sparse.vocab_size == dense.vocab_size
  for level in range(dense.num_levels):
    num_prefixes, vocab = dense.num_prefixes[level], dense.vocab_size
    # Every (prefix, code) pair, plus invalid prefixes and codes.
    prefix_idx, code = np.meshgrid(np.arange(-2, num_prefixes + 2),
                                   np.arange(-1, vocab + 1), indexing='ij')
    prefix_idx = prefix_idx.astype(np.int32)
    code = code.astype(np.int32)
    batch = rng.integers(-1, num_prefixes + 1, (3, 5)).astype(np.int32)
    for args in ((prefix_idx, code), (batch, batch)):
      for got, want in zip(_lookups(sparse, level, *args),
                           _lookups(dense, level, *args)):
        np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
      trie.lookup_item(sparse, jnp.asarray(codes)), np.arange(len(codes)))
  return dense, sparse


@pytest.mark.parametrize('compared_max', [16, 0])  # compare / scatter masks
@pytest.mark.parametrize('seed, num_levels, vocab_size', CASES)
def test_sparse_last_level_equals_dense(seed, num_levels, vocab_size,
                                        compared_max, monkeypatch):
  monkeypatch.setattr(trie, '_MAX_CHILDREN_COMPARED', compared_max)
  rng = np.random.default_rng(seed)
  num_items = min(40, vocab_size ** num_levels - 1)
  codes = _unique_codes(rng, num_items, num_levels, vocab_size)
  _assert_sparse_equals_dense(codes[rng.permutation(num_items)], rng)


@pytest.mark.parametrize('compared_max', [16, 0])
def test_sparse_edge_cases_equal_dense(compared_max, monkeypatch):
  monkeypatch.setattr(trie, '_MAX_CHILDREN_COMPARED', compared_max)
  rng = np.random.default_rng(5)
  vocab_size = 20
  codes = _edge_case_codes(rng, vocab_size)
  _, sparse = _assert_sparse_equals_dense(codes, rng, vocab_size + 3)
  level = sparse.children[-1]
  counts = np.diff(np.asarray(level.offsets))
  assert level.max_children == vocab_size == counts.max()
  assert (counts == 1).any()


def test_sparse_tables_and_auto_rule(monkeypatch):
  codes = np.array([[1, 2], [0, 1], [1, 0], [1, 3]], np.int32)
  sparse = trie.build_trie(codes, vocab_size=5, last_level='sparse')
  level = sparse.children[1]
  np.testing.assert_array_equal(level.offsets, [0, 1, 4])
  np.testing.assert_array_equal(level.codes, [1, 0, 2, 3])
  np.testing.assert_array_equal(level.targets, [1, 2, 0, 3])
  assert (level.vocab_size, level.max_children) == (5, 3)
  assert level.shape == (2, 5) and sparse.num_prefixes == (1, 2)
  assert level.nbytes == 4 * (3 + 4 + 4)
  assert sparse.nbytes == 4 * 5 + level.nbytes + 2 * 4 * 2 * 4
  dense_last_bytes = 2 * 5 * 4
  monkeypatch.setattr(trie, 'AUTO_SPARSE_BYTES', dense_last_bytes)
  auto = trie.build_trie(codes, vocab_size=5)         # not above: dense
  assert not isinstance(auto.children[1], trie.SparseLevel)
  monkeypatch.setattr(trie, 'AUTO_SPARSE_BYTES', dense_last_bytes - 1)
  auto = trie.build_trie(codes, vocab_size=5, last_level='auto')
  assert isinstance(auto.children[1], trie.SparseLevel)
  assert not isinstance(auto.children[0], trie.SparseLevel)  # last only
  with pytest.raises(errors.TrieError, match="last_level must be.*'csr'"):
    trie.build_trie(codes, last_level='csr')


def test_sparse_lookups_trace_once_and_check_prefixes():
  rng = np.random.default_rng(3)
  catalogue = trie.build_trie(_unique_codes(rng, 60, 3, 6),
                              last_level='sparse')
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def lookups(t, p, c):
    return trie.valid_next_mask(t, 2, p), trie.next_prefix(t, 2, p, c)

  for _ in range(3):
    prefix_idx = jnp.asarray(rng.integers(
        0, catalogue.num_prefixes[2], size=(16, 4)), jnp.int32)
    mask, _ = lookups(catalogue, prefix_idx,
                      jnp.asarray(rng.integers(0, 6, (16, 4)), jnp.int32))
    assert np.all(np.asarray(mask).any(-1))
  with pytest.raises(errors.DeadPrefixError, match=r'level 2: prefix_idx\[1\]'):
    trie.check_prefixes(catalogue, 2, np.array([0, -1], np.int32))
