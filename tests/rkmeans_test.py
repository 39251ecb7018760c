"""Tests of the residual k-means tokenizer."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.sid import errors
from vstar_jax.sid import rkmeans


def _blobs(rng, num_blobs, per_blob, dim, scale, noise=0.1):
  centres = rng.normal(size=(num_blobs, dim)) * scale
  labels = np.repeat(np.arange(num_blobs), per_blob)
  x = centres[labels] + noise * rng.normal(size=(labels.size, dim))
  return x.astype(np.float32), labels


def test_residual_kmeans_is_bitwise_deterministic():
  x = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
  kwargs = dict(num_levels=3, codebook_size=8, num_iters=5)
  codes_a, books_a, _ = rkmeans.residual_kmeans(jax.random.key(3), x, **kwargs)
  codes_b, books_b, _ = rkmeans.residual_kmeans(jax.random.key(3), x, **kwargs)
  _, books_c, _ = rkmeans.residual_kmeans(jax.random.key(4), x, **kwargs)
  assert codes_a.dtype == np.int32 and codes_a.shape == (120, 3)
  assert books_a.shape == (3, 8, 6)
  np.testing.assert_array_equal(codes_a, codes_b)
  assert books_a.tobytes() == books_b.tobytes()
  assert books_a.tobytes() != books_c.tobytes()  # the seed matters


def test_kmeans_beats_random_assignment_and_uses_every_code():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(120, 6)).astype(np.float32)
  codes, _, stats = rkmeans.residual_kmeans(
      jax.random.key(0), x, num_levels=3, codebook_size=8, num_iters=5)
  level0 = stats['levels'][0]
  # Random assignment with its own cluster means, the best it can do.
  random_codes = rng.integers(0, 8, size=120)
  means = np.stack([x[random_codes == c].mean(0) for c in range(8)])
  random_sq = np.mean(np.sum((x - means[random_codes]) ** 2, axis=1))
  assert level0['sq_norm_after'] < 0.8 * random_sq
  norms = [s['sq_norm_after'] for s in stats['levels']]
  assert norms[0] > norms[1] > norms[2]  # every level explains more
  for level, s in enumerate(stats['levels']):
    assert s['used_codes'] == 8 and s['usage'] == 1.
    assert np.unique(codes[:, level]).size == 8


def test_recovers_planted_clusters():
  x, labels = _blobs(np.random.default_rng(2), 8, 15, 4, scale=50.)
  codes, _, _ = rkmeans.residual_kmeans(
      jax.random.key(0), x, num_levels=1, codebook_size=8, num_iters=5)
  # A bijection between planted blobs and codes.
  pairs = set(zip(labels.tolist(), codes[:, 0].tolist()))
  assert len(pairs) == 8
  assert len({c for _, c in pairs}) == 8


def test_balanced_mode_caps_cluster_size():
  rng = np.random.default_rng(3)
  # 90 of 120 points in one tight blob: plain k-means overfills some codes.
  x = np.concatenate([0.01 * rng.normal(size=(90, 4)),
                      rng.normal(size=(30, 4)) * 10]).astype(np.float32)
  kwargs = dict(num_levels=2, codebook_size=8, num_iters=5)
  plain, _, _ = rkmeans.residual_kmeans(jax.random.key(0), x, **kwargs)
  balanced, _, stats = rkmeans.residual_kmeans(
      jax.random.key(0), x, balanced=True, **kwargs)
  cap = 15  # ceil(120 / 8)
  assert np.bincount(plain[:, 0]).max() > cap
  for level in range(2):
    assert np.bincount(balanced[:, level], minlength=8).max() <= cap
    assert stats['levels'][level]['max_cluster_size'] <= cap


def test_balanced_assignment_greedy_by_regret():
  sq = jnp.array([[0., 10.], [0., 1.], [5., 6.]])
  # Regrets 10, 1, 1: point 0 first, then 1 (index tie-break) fills code 0.
  assign = rkmeans.balanced_assignment(sq, capacity=2)
  np.testing.assert_array_equal(assign, [0, 0, 1])
  with pytest.raises(ValueError, match='capacity'):
    rkmeans.balanced_assignment(sq, capacity=1)


def test_update_centers_reseeds_empty_clusters_to_farthest_points():
  x = jnp.array([[0.], [1.], [2.], [10.], [11.], [30.]])
  assign = jnp.array([0, 0, 0, 1, 1, 1], jnp.int32)
  centers = rkmeans.update_centers(x, assign, num_clusters=4)
  # Cluster 1 mean 17: farthest points are 30 (d=13) then 10 (d=7).
  np.testing.assert_allclose(centers[:, 0], [1., 17., 30., 10.])


def test_kmeans_plus_plus_never_repeats_a_point():
  x = jnp.arange(12., dtype=jnp.float32).reshape(6, 2)
  centers = rkmeans.kmeans_plus_plus_init(
      jax.random.key(0), x, num_clusters=6)
  chex.assert_shape(centers, (6, 2))
  assert sorted(np.asarray(centers[:, 0]).tolist()) == [0, 2, 4, 6, 8, 10]


def test_level_residuals_match_the_kmeans_residual():
  x = np.random.default_rng(4).normal(size=(120, 6)).astype(np.float32)
  codes, books, stats = rkmeans.residual_kmeans(
      jax.random.key(3), x, num_levels=3, codebook_size=8, num_iters=5)
  residual = rkmeans.level_residuals(x, codes, books, 3)
  np.testing.assert_allclose(np.mean(np.sum(residual ** 2, axis=1)),
                             stats['final_sq_norm'], rtol=1e-5)
  np.testing.assert_array_equal(rkmeans.level_residuals(x, codes, books, 0), x)


@pytest.mark.parametrize('bad, match', [
    (np.zeros((4,), np.float32), r'non-empty \[N, D\]'),
    (np.zeros((4, 2), np.int32), 'float'),
    (np.array([[0., 1.], [np.nan, 1.]], np.float32), 'row 1'),
])
def test_bad_embeddings_raise(bad, match):
  with pytest.raises(errors.EmbeddingsError, match=match):
    rkmeans.residual_kmeans(jax.random.key(0), bad, num_levels=1,
                            codebook_size=2, num_iters=1)


def test_levels_share_one_trace():
  # pylint: disable=protected-access
  x = np.random.default_rng(5).normal(size=(37, 3)).astype(np.float32)
  level_fn = rkmeans._jitted_level(4, 2, False)
  traces = level_fn._cache_size()
  for seed in (0, 1):
    rkmeans.residual_kmeans(jax.random.key(seed), x, num_levels=3,
                            codebook_size=4, num_iters=2)
  assert level_fn._cache_size() == traces + 1  # 6 level calls, one trace
