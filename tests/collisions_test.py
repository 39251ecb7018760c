"""Tests of collision resolution."""
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.sid import collisions
from vstar_jax.sid import errors
from vstar_jax.sid import trie


def _colliding_case(seed, num_items=100, num_levels=3, num_codes=8, dim=5):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, num_codes, size=(num_items, num_levels))
  residuals = rng.normal(size=(num_items, dim)).astype(np.float32)
  codebook = rng.normal(size=(num_codes, dim)).astype(np.float32)
  return codes.astype(np.int32), residuals, codebook


def _assert_unique_and_walkable(codes):
  assert np.unique(codes, axis=0).shape[0] == codes.shape[0]
  catalogue = trie.build_trie(codes)
  np.testing.assert_array_equal(
      trie.lookup_item(catalogue, jnp.asarray(codes)),
      np.arange(codes.shape[0]))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_reassignment_gives_unique_sids_on_the_same_parents(seed):
  codes, residuals, codebook = _colliding_case(seed)
  new, stats = collisions.resolve_by_reassignment(codes, residuals, codebook)
  assert new.dtype == np.int32 and new.shape == codes.shape
  _assert_unique_and_walkable(new)
  np.testing.assert_array_equal(new[:, :-1], codes[:, :-1])
  moved = np.any(new != codes, axis=1)
  assert stats['num_moved'] == moved.sum()
  before = stats['before']
  assert before['colliding_items'] > 0
  assert stats['num_moved'] == codes.shape[0] - before['unique_sids']
  assert stats['after']['colliding_items'] == 0
  assert stats['after']['collision_rate'] == 0.
  again, _ = collisions.resolve_by_reassignment(codes, residuals, codebook)
  np.testing.assert_array_equal(new, again)


def test_reassignment_moves_to_the_nearest_unused_code():
  codebook = np.array([[0.], [1.], [2.], [3.]], np.float32)
  codes = np.array([[5, 0], [5, 0], [5, 0], [6, 0]], np.int32)
  residuals = np.array([[0.1], [2.9], [0.], [1.]], np.float32)
  new, stats = collisions.resolve_by_reassignment(codes, residuals, codebook)
  # Item 2 sits on centre 0 and keeps it; item 0 -> 1, item 1 -> 3 (nearest
  # free); item 3 has another parent and keeps code 0.
  np.testing.assert_array_equal(new[:, 1], [1, 3, 0, 0])
  assert stats['num_moved'] == 2


def test_reassignment_of_an_overfull_parent_suggests_extra_level():
  codes = np.array([[1, 0]] * 5, np.int32)
  with pytest.raises(errors.CollisionError, match=(
      r'5 items share the prefix \[1\] .* only 4 codes; use the '
      'extra_level method')):
    collisions.resolve_by_reassignment(
        codes, np.zeros((5, 2), np.float32), np.zeros((4, 2), np.float32))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_extra_level_gives_unique_sids(seed):
  codes, _, _ = _colliding_case(seed, num_codes=4)
  new, stats = collisions.resolve_by_extra_level(codes)
  assert new.shape == (codes.shape[0], codes.shape[1] + 1)
  _assert_unique_and_walkable(new)
  np.testing.assert_array_equal(new[:, :-1], codes)
  sizes = np.unique(codes, axis=0, return_counts=True)[1]
  assert stats['extra_level_vocab_size'] == sizes.max() == new[:, -1].max() + 1
  assert stats['after']['unique_sids'] == codes.shape[0]


def test_extra_level_ranks_by_item_index():
  codes = np.array([[2, 1], [0, 0], [2, 1], [2, 1], [0, 0], [3, 3]], np.int32)
  new, stats = collisions.resolve_by_extra_level(codes)
  np.testing.assert_array_equal(new[:, -1], [0, 0, 1, 2, 1, 0])
  assert stats['before']['colliding_items'] == 5
  assert stats['before']['unique_sids'] == 3
  no_collision, stats = collisions.resolve_by_extra_level(codes[[0, 1, 5]])
  np.testing.assert_array_equal(no_collision[:, -1], [0, 0, 0])
  assert stats['extra_level_vocab_size'] == 1
