"""Residual k-means tokenizer: item embeddings -> L-level semantic IDs.

Level l clusters the residual left by levels 0..l-1 into V centres (k-means++
init, Lloyd iterations, empty clusters re-seeded to the farthest points), so
an item's SID is the path of its nearest centres. The per-level functions are
pure and jittable with fixed shapes; `residual_kmeans` is a host-side driver
that jits one level function on its first call (never at import) and reuses it
for every level, so a catalogue of shape [N, D] is traced once.
"""
import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vstar_jax.sid import errors

_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on accelerators


def pairwise_sq_dists(x: chex.Array, centers: chex.Array) -> chex.Array:
  """Squared Euclidean distances, clipped at 0.

  Args:
    x: [N, D] float points.
    centers: [V, D] float centres.

  Returns:
    [N, V] float distances.
  """
  chex.assert_rank([x, centers], 2)
  x_sq = jnp.sum(x * x, axis=-1, keepdims=True)  # [N, 1]
  c_sq = jnp.sum(centers * centers, axis=-1)[None, :]  # [1, V]
  cross = jnp.matmul(x, centers.T, precision=_HIGHEST)
  return jnp.maximum(x_sq - 2. * cross + c_sq, 0.)


def kmeans_plus_plus_init(
    rng_key: chex.PRNGKey, x: chex.Array, *, num_clusters: int) -> chex.Array:
  """k-means++ seeding: each next centre drawn with probability ~ D(x)^2.

  Args:
    rng_key: consumed.
    x: [N, D] float points.
    num_clusters: V, static.

  Returns:
    [V, D] initial centres (rows of x). If fewer than V distinct points
    exist, the surplus draws are uniform among the remaining points.
  """
  chex.assert_rank(x, 2)
  num_points = x.shape[0]
  first_key, loop_key = jax.random.split(rng_key)
  first = jax.random.randint(first_key, (), 0, num_points)
  centers = jnp.zeros((num_clusters, x.shape[1]), x.dtype).at[0].set(x[first])
  min_sq = jnp.sum((x - x[first][None, :]) ** 2, axis=-1)  # [N]

  def body(i, carry):
    centers, min_sq = carry
    total = jnp.sum(min_sq)
    # log(0) = -inf: points already chosen are never drawn again. If all
    # distances are 0 (duplicates only) the draw is uniform.
    logits = jnp.where(total > 0., jnp.log(min_sq), 0.)
    idx = jax.random.categorical(jax.random.fold_in(loop_key, i), logits)
    centers = centers.at[i].set(x[idx])
    new_sq = jnp.sum((x - x[idx][None, :]) ** 2, axis=-1)
    return centers, jnp.minimum(min_sq, new_sq)

  centers, _ = jax.lax.fori_loop(1, num_clusters, body, (centers, min_sq))
  return centers


def nearest_assignment(sq_dists: chex.Array) -> chex.Array:
  """Nearest centre per point. sq_dists: [N, V]. Returns [N] int32."""
  return jnp.argmin(sq_dists, axis=-1).astype(jnp.int32)


def balanced_assignment(sq_dists: chex.Array, *, capacity: int) -> chex.Array:
  """Capacity-constrained greedy assignment: no cluster gets > capacity.

  Points are served in order of regret (second-best minus best distance,
  largest first, ties by index) and each takes its nearest centre that still
  has room. Deterministic; needs capacity * V >= N.

  Args:
    sq_dists: [N, V] float distances.
    capacity: static max points per centre.

  Returns:
    [N] int32 assignment.
  """
  chex.assert_rank(sq_dists, 2)
  num_points, num_clusters = sq_dists.shape
  if capacity * num_clusters < num_points:
    raise ValueError(
        f'capacity {capacity} x {num_clusters} clusters < {num_points} points')
  if num_clusters > 1:
    two_best = -jax.lax.top_k(-sq_dists, 2)[0]  # [N, 2] ascending
    regret = two_best[:, 1] - two_best[:, 0]
  else:
    regret = jnp.zeros((num_points,), sq_dists.dtype)
  order = jnp.argsort(-regret, stable=True)

  def body(t, carry):
    assign, counts = carry
    i = order[t]
    row = jnp.where(counts < capacity, sq_dists[i], jnp.inf)
    c = jnp.argmin(row).astype(jnp.int32)
    return assign.at[i].set(c), counts.at[c].add(1)

  assign = jnp.zeros((num_points,), jnp.int32)
  counts = jnp.zeros((num_clusters,), jnp.int32)
  assign, _ = jax.lax.fori_loop(0, num_points, body, (assign, counts))
  return assign


def update_centers(
    x: chex.Array, assign: chex.Array, *, num_clusters: int) -> chex.Array:
  """Cluster means; an empty cluster is re-seeded to a far point.

  The j-th empty cluster (in index order) takes the j-th farthest point from
  its own new centre, so empty codes come back into use deterministically.

  Args:
    x: [N, D] float points.
    assign: [N] int32 cluster of each point.
    num_clusters: V, static.

  Returns:
    [V, D] centres.
  """
  chex.assert_rank([x, assign], [2, 1])
  one_hot = jax.nn.one_hot(assign, num_clusters, dtype=x.dtype)  # [N, V]
  counts = jnp.sum(one_hot, axis=0)  # [V]
  # A matmul, not a scatter-add: deterministic on GPU as well.
  sums = jnp.matmul(one_hot.T, x, precision=_HIGHEST)  # [V, D]
  means = sums / jnp.maximum(counts, 1.)[:, None]
  own_sq = jnp.sum((x - means[assign]) ** 2, axis=-1)  # [N]
  far_order = jnp.argsort(-own_sq, stable=True)
  empty = counts == 0
  rank = jnp.cumsum(empty) - 1
  reseed = x[far_order[jnp.minimum(rank, x.shape[0] - 1)]]
  return jnp.where(empty[:, None], reseed, means)


def kmeans_level(
    rng_key: chex.PRNGKey, x: chex.Array, *, num_clusters: int,
    num_iters: int, balanced: bool = False,
) -> tuple[chex.Array, chex.Array, chex.Array, dict[str, chex.Array]]:
  """One residual level: k-means++ then Lloyd iterations. Jittable.

  Args:
    rng_key: consumed (k-means++ draws only; Lloyd is deterministic).
    x: [N, D] float residuals.
    num_clusters: V, static.
    num_iters: Lloyd iterations, static.
    balanced: capacity ceil(N / V) per code (`balanced_assignment`).

  Returns:
    codes [N] int32, centres [V, D], next residual x - centres[codes] [N, D],
    and scalar stats (`used_codes`, `max_cluster_size`, `sq_norm_before`,
    `sq_norm_after`: mean squared residual norm in and out).
  """
  chex.assert_rank(x, 2)
  num_points = x.shape[0]
  if balanced:
    capacity = -(-num_points // num_clusters)
    assign_fn = functools.partial(balanced_assignment, capacity=capacity)
  else:
    assign_fn = nearest_assignment

  def lloyd_step(_, centers):
    assign = assign_fn(pairwise_sq_dists(x, centers))
    return update_centers(x, assign, num_clusters=num_clusters)

  centers = kmeans_plus_plus_init(rng_key, x, num_clusters=num_clusters)
  centers = jax.lax.fori_loop(0, num_iters, lloyd_step, centers)
  codes = assign_fn(pairwise_sq_dists(x, centers))
  residual = x - centers[codes]
  counts = jnp.zeros((num_clusters,), jnp.int32).at[codes].add(1)
  stats = {
      'used_codes': jnp.sum(counts > 0),
      'max_cluster_size': jnp.max(counts),
      'sq_norm_before': jnp.mean(jnp.sum(x * x, axis=-1)),
      'sq_norm_after': jnp.mean(jnp.sum(residual * residual, axis=-1)),
  }
  return codes, centers, residual, stats


@functools.lru_cache(maxsize=16)
def _jitted_level(num_clusters: int, num_iters: int, balanced: bool):
  return jax.jit(functools.partial(
      kmeans_level, num_clusters=num_clusters, num_iters=num_iters,
      balanced=balanced))


def check_embeddings(embeddings: np.ndarray, *, name: str = 'embeddings'):
  """Raises EmbeddingsError unless embeddings is a finite float [N, D]."""
  if not isinstance(embeddings, np.ndarray):
    raise errors.EmbeddingsError(
        f'{name}: expected a numpy array, got {type(embeddings).__name__}')
  if embeddings.ndim != 2 or 0 in embeddings.shape:
    raise errors.EmbeddingsError(
        f'{name}: expected a non-empty [N, D] array, got shape '
        f'{embeddings.shape}')
  if not np.issubdtype(embeddings.dtype, np.floating):
    raise errors.EmbeddingsError(
        f'{name}: expected a float array, got dtype {embeddings.dtype}')
  bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
  if bad.size:
    raise errors.EmbeddingsError(
        f'{name}: row {bad[0]} has non-finite values ({bad.size} bad rows)')


def residual_kmeans(
    rng_key: chex.PRNGKey, embeddings: np.ndarray, *, num_levels: int,
    codebook_size: int, num_iters: int, balanced: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """Residual k-means SIDs of a catalogue. Host-side; jits one level fn.

  Args:
    rng_key: typed key, consumed (split once per level).
    embeddings: [N, D] float item embeddings (cast to float32).
    num_levels: L.
    codebook_size: V, codes per level.
    num_iters: Lloyd iterations per level.
    balanced: cap each code at ceil(N / V) items per level.

  Returns:
    codes [N, L] int32 (before collision resolution), codebooks [L, V, D]
    float32, and stats: {'levels': [per-level dict of used_codes, usage,
    max_cluster_size, sq_norm_before, sq_norm_after], 'final_sq_norm'}.
  """
  check_embeddings(embeddings)
  level_fn = _jitted_level(codebook_size, num_iters, balanced)
  residual = jax.device_put(np.asarray(embeddings, np.float32))
  codes, codebooks, level_stats = [], [], []
  for level, level_key in enumerate(jax.random.split(rng_key, num_levels)):
    level_codes, centers, residual, stats = level_fn(level_key, residual)
    stats = {k: v.item() for k, v in jax.device_get(stats).items()}
    stats['usage'] = stats['used_codes'] / codebook_size
    level_stats.append({'level': level, **stats})
    codes.append(level_codes)
    codebooks.append(centers)
  codes = np.stack(jax.device_get(codes), axis=1).astype(np.int32)
  codebooks = np.stack(jax.device_get(codebooks), axis=0).astype(np.float32)
  return codes, codebooks, {
      'levels': level_stats,
      'final_sq_norm': level_stats[-1]['sq_norm_after'],
  }


def level_residuals(
    embeddings: np.ndarray, codes: np.ndarray, codebooks: np.ndarray,
    level: int) -> np.ndarray:
  """The residual that level `level` quantised (host numpy).

  Args:
    embeddings: [N, D] float.
    codes: [N, L] int32 from `residual_kmeans`.
    codebooks: [L, V, D] float32.
    level: 0..L-1.

  Returns:
    [N, D] float32: embeddings minus the centres of levels 0..level-1,
    subtracted in the same order as `residual_kmeans`.
  """
  residual = np.asarray(embeddings, np.float32)
  for l in range(level):
    residual = residual - codebooks[l][codes[:, l]]
  return residual
