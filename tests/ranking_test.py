"""Ranking and diversity metrics against hand-computed values."""
import numpy as np
import pytest

from vstar_jax.eval import ranking


def test_ranks_and_metrics_hand_computed():
  items = np.array([[5, 3, 9], [1, 2, 4], [7, -1, -1], [-1, -1, -1]])
  targets = np.array([3, 4, 8, 0])
  ranks = ranking.target_ranks(items, targets)
  np.testing.assert_array_equal(ranks, [1, 2, 3, 3])
  m = ranking.hit_ndcg(ranks, list_len=3, cutoffs=(1, 2, 3))
  assert m['hr@1'] == 0.0
  assert m['hr@2'] == pytest.approx(0.25)
  assert m['hr@3'] == pytest.approx(0.5)
  assert m['ndcg@2'] == pytest.approx((1 / np.log2(3)) / 4)
  assert m['ndcg@3'] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 4)


def test_invalid_entries_never_hit():
  items = np.array([[-1, -1]])
  assert ranking.target_ranks(items, np.array([0]))[0] == 2
  with pytest.raises(ValueError, match='targets'):
    ranking.target_ranks(items, np.array([-1]))


def test_cutoff_beyond_list_is_an_error():
  with pytest.raises(ValueError, match='beam width'):
    ranking.hit_ndcg(np.array([0]), list_len=5, cutoffs=(10,))


def test_diversity_hand_computed():
  codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
  counts = np.array([10, 5, 1, 0])
  tail = ranking.long_tail_items(counts, head_fraction=0.5)
  np.testing.assert_array_equal(tail, [False, False, True, True])
  items = np.array([[0, 1, -1], [0, 2, 3]])
  d = ranking.diversity(items, codes, tail, top=3)
  assert d['coverage@3'] == pytest.approx(4 / 4)
  assert d['long_tail_share@3'] == pytest.approx(2 / 5)
  assert d['distinct_l1@3'] == pytest.approx((1 + 2) / 2)
  assert d['distinct_l2@3'] == pytest.approx((2 + 3) / 2)
  # Without SIDs (an ID model, no index): item metrics only.
  no_sids = ranking.diversity(items, None, tail, top=3)
  assert no_sids == {k: d[k] for k in ('coverage@3', 'long_tail_share@3')}
