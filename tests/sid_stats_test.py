"""Tests of SID statistics, on a hand-computed case and the real variants."""
import numpy as np
import pytest

from vstar_jax.data import sid_index
from vstar_jax.sid import stats


def test_hand_computed_case():
  codes = np.array([[0, 0], [0, 1], [0, 1], [1, 2]], np.int32)
  s = stats.sid_stats(codes, codebook_size=4)
  assert (s['num_items'], s['num_levels']) == (4, 2)
  assert [l['distinct_tokens'] for l in s['levels']] == [2, 3]
  assert [l['usage'] for l in s['levels']] == [0.5, 0.75]
  assert not s['codebook_size_inferred']
  assert s['unique_sids'] == 3 and s['colliding_items'] == 2
  assert s['collision_rate'] == 0.25 and s['colliding_item_rate'] == 0.5
  assert s['max_items_per_sid'] == 2
  depth0, depth1, depth2 = s['depths']
  assert depth0['num_prefixes'] == 1
  assert depth0['items_per_prefix']['max'] == 4
  assert depth0['children_per_prefix']['max'] == 2
  assert depth1['num_prefixes'] == 2
  assert depth1['items_per_prefix'] == {
      'min': 1, 'mean': 2., 'max': 3, 'p50': 2., 'p90': 2.8}
  assert depth1['children_per_prefix']['min'] == 1
  assert depth1['children_per_prefix']['max'] == 2
  assert depth2['num_prefixes'] == 3
  assert depth2['items_per_prefix']['max'] == 2
  assert 'children_per_prefix' not in depth2


def test_codebook_sizes_inferred_or_per_level():
  codes = np.array([[0, 5], [3, 1]], np.int32)
  inferred = stats.sid_stats(codes)
  assert inferred['codebook_size_inferred']
  assert [l['codebook_size'] for l in inferred['levels']] == [4, 6]
  per_level = stats.sid_stats(codes, [8, 10])
  assert [l['usage'] for l in per_level['levels']] == [0.25, 0.2]
  with pytest.raises(ValueError, match='3 entries for 2 levels'):
    stats.sid_stats(codes, [1, 2, 3])


@pytest.mark.parametrize('variant, tokens, unique, colliding', [
    # From ../shared/data/amazon_scientific/README.md.
    ('rkmeans_native', [256] * 4, 3469, 1326),
    ('letter_native', [129, 239, 249, 256], 4317, 54),
    ('rqvae_zcr', [10, 249, 239, 250], 4344, 0),
])
def test_matches_the_published_variant_table(
    shared_data, variant, tokens, unique, colliding):
  path = (shared_data / 'amazon_scientific' / 'indexes' / variant
          / 'Scientific.index.json.gz')
  codes = sid_index.sid_table(sid_index.read_sid_index(path), source=path)
  s = stats.sid_stats(codes, 256)
  assert [l['distinct_tokens'] for l in s['levels']] == tokens
  assert s['unique_sids'] == unique and s['colliding_items'] == colliding
  assert s['depths'][-1]['num_prefixes'] == unique
