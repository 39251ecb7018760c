"""Rewards, GRPO/Sibling-GRPO advantages and losses against references."""
import collections
import math
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.rl import advantages
from vstar_jax.rl import losses
from vstar_jax.rl import rewards


def _sibling_reference(codes, r, mask):
  """Eq. 15-18 with Python dicts: per depth, parent -> {node: [rewards]}."""
  g, num_levels = codes.shape
  adv = np.zeros((g, num_levels))
  rep = np.zeros((g, num_levels), bool)
  for l in range(1, num_levels + 1):
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    first = {}
    for i in range(g):
      if not mask[i]:
        continue
      h, v = tuple(codes[i, :l - 1]), tuple(codes[i, :l])
      groups[h][v].append(r[i])
      first.setdefault(v, i)
    for h, nodes in groups.items():
      means = {v: float(np.mean(rs)) for v, rs in nodes.items()}
      if len(means) < 2:
        continue
      mu = float(np.mean(list(means.values())))
      sd = math.sqrt(float(np.mean([(m - mu) ** 2 for m in means.values()])))
      for i in range(g):
        if mask[i] and tuple(codes[i, :l - 1]) == h:
          adv[i, l - 1] = (means[tuple(codes[i, :l])] - mu) / (sd + 1e-4)
    for v, i in first.items():
      rep[i, l - 1] = True
  return adv, rep


@pytest.mark.parametrize('seed', range(6))
def test_sibling_advantages_match_reference(seed):
  rng = np.random.default_rng(seed)
  g, num_levels = 12, 3
  codes = rng.integers(0, 3, (g, num_levels))      # small V: many ties
  case = seed % 3
  if case == 0:
    r = rng.normal(size=g)
  elif case == 1:
    r = np.full(g, 0.7)                              # all-equal rewards
  else:
    r = np.zeros(g)                                  # all-zero rewards
  mask = rng.random(g) < 0.85
  adv, rep = jax.jit(advantages.sibling_advantages)(
      jnp.asarray(codes), jnp.asarray(r, jnp.float32), jnp.asarray(mask))
  want_adv, want_rep = _sibling_reference(codes, r, mask)
  np.testing.assert_allclose(np.asarray(adv), want_adv, atol=2e-4)
  np.testing.assert_array_equal(np.asarray(rep), want_rep)
  if case:
    assert not np.asarray(adv).any()


def test_sibling_zero_mean_and_singletons():
  codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 2], [1, 2, 0]])
  r = np.array([1.0, 0.0, 0.5, -0.2, 0.3], np.float32)
  adv, rep = advantages.sibling_advantages(jnp.asarray(codes), jnp.asarray(r),
                                           jnp.ones(5, bool))
  adv, rep = np.asarray(adv), np.asarray(rep)
  # Depth 2 under parent (1,): one child (1,2) -> singleton parent, zero.
  assert adv[3, 1] == 0 and adv[4, 1] == 0
  # Per sibling set, the advantages of the distinct nodes are zero-mean.
  for l in range(3):
    parents = collections.defaultdict(list)
    for i in range(5):
      if rep[i, l]:
        parents[tuple(codes[i, :l])].append(adv[i, l])
    for vals in parents.values():
      assert abs(sum(vals)) < 1e-4


def test_sibling_groups_never_mix_prompts():
  codes = jnp.array([[[0, 0], [0, 1]], [[0, 0], [0, 1]]])
  r = jnp.array([[1., 0.], [0., 0.]])
  adv, _ = advantages.batched_sibling_advantages(codes, r, jnp.ones((2, 2),
                                                                    bool))
  assert np.asarray(adv[1]).sum() == 0 and np.abs(np.asarray(adv[0])).sum() > 0


def test_grpo_hand_computed():
  r = jnp.array([1., 0., 0., 0.5, 9.])
  mask = jnp.array([True, True, True, True, False])
  adv = np.asarray(advantages.grpo_advantages(r, mask))
  mean = 1.5 / 4
  std = math.sqrt(((1 - mean) ** 2 + 2 * mean ** 2 + (0.5 - mean) ** 2) / 4)
  np.testing.assert_allclose(adv[:4], (np.array([1, 0, 0, .5]) - mean) /
                             (std + 1e-4), rtol=1e-5)
  assert adv[4] == 0
  zero = np.asarray(advantages.grpo_advantages(jnp.zeros(4), jnp.ones(4,
                                                                      bool)))
  assert not zero.any()


def test_ranking_reward_hand_computed():
  items = jnp.array([5, 7, 9, 11])
  logp = jnp.array([-1., -0.5, -3., -2.])     # ranks: 1, 0, 3, 2
  mask = jnp.array([True, True, True, True])
  r = np.asarray(rewards.ranking_reward(items, logp, mask, 9))
  a = {r: 1 / math.log2(r + 2) for r in range(4)}
  s = sum(a.values())                         # over all four ranks
  np.testing.assert_allclose(r, [-a[1] / s, -a[0] / s, 1.0, -a[2] / s],
                             rtol=1e-6)
  absent = np.asarray(rewards.ranking_reward(items, logp, mask, 3))
  assert not absent.any()
  np.testing.assert_allclose(np.asarray(rewards.prefix_reward(
      jnp.array([[1, 2, 3], [1, 0, 3]]), jnp.array([True, True]),
      jnp.array([1, 2, 0]))), [2 / 3, 1 / 3])


def test_dense_rewards_and_td_hand_computed():
  codes = jnp.array([[0, 1], [0, 2], [1, 0]])
  emb = jnp.array([[1., 0.], [0., 1.], [1., 1.]])
  target_emb = jnp.array([1., 0.])
  target_codes = jnp.array([0, 2])
  w = jnp.array([0.3, 1.0])
  r = np.asarray(rewards.dense_step_rewards(
      codes, jnp.ones(3, bool), emb, target_emb, target_codes, w))
  # Depth 1: candidates 0, 1 match the target prefix (0,) -> 0.3; candidate
  # 2's group is itself: cos((1,1),(1,0)) = 1/sqrt(2).
  np.testing.assert_allclose(r[:, 0], [0.3, 0.3,
                                       -0.3 * (1 - 1 / math.sqrt(2))],
                             rtol=1e-6)
  np.testing.assert_allclose(r[:, 1], [-1.0 * (1 - 1.0), 1.0,
                                       -1.0 * (1 - 1 / math.sqrt(2))],
                             rtol=1e-6, atol=1e-7)
  values = jnp.array([0.1, 0.2, 0.4])
  t = np.asarray(rewards.td_targets(jnp.array([0.3, 1.0]), values, 0.99))
  np.testing.assert_allclose(t, [0.99 * 0.2, 0.3 + 0.99 * 0.4, 1.0],
                             rtol=1e-6)


def test_kl_nonnegative_zero_at_reference():
  rng = np.random.default_rng(0)
  logp = jnp.asarray(-rng.random((4, 3)) * 3, jnp.float32)
  ref = jnp.asarray(-rng.random((4, 3)) * 3, jnp.float32)
  mask = jnp.ones((4, 3), bool)
  assert (np.asarray(losses.k3_kl(logp, ref, mask)) >= 0).all()
  assert not np.asarray(losses.k3_kl(logp, logp, mask)).any()


def test_surrogate_gradient_moves_positive_token_up():
  chex.clear_trace_counter()
  logits = jnp.zeros((2, 1, 3))        # two candidates, one level, V = 3
  tokens = jnp.array([[0], [1]])
  adv = jnp.array([[1.0], [-1.0]])

  def objective(logits):
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None],
                               -1)[..., 0]
    return losses.clipped_surrogate(logp, logp, adv, jnp.ones((2, 1), bool),
                                    0.2).sum()
  grads = jax.grad(objective)(logits)
  chex.assert_tree_all_finite(grads)
  new = jax.nn.log_softmax(logits + 0.1 * grads)
  assert new[0, 0, 0] > jax.nn.log_softmax(logits)[0, 0, 0]
  assert new[1, 0, 1] < jax.nn.log_softmax(logits)[1, 0, 1]


def test_group_stats_hand_computed():
  from vstar_jax.rl import diagnostics  # pylint: disable=g-import-not-at-top
  from vstar_jax.decoding import types  # pylint: disable=g-import-not-at-top
  items = jnp.array([[3, 4, 5, 3], [1, 2, 0, 0]])
  codes = jnp.array([[[0, 1], [0, 2], [1, 0], [0, 1]],
                     [[2, 0], [2, 0], [1, 1], [1, 1]]])
  mask = jnp.array([[True, True, True, False], [True, True, True, True]])
  cands = types.Candidates(
      items=items, codes=codes, logp=jnp.zeros((2, 4)),
      value=jnp.zeros((2, 4)), evaluated=jnp.zeros((2, 4), bool), mask=mask,
      cost=jnp.array([10, 12]))
  reward = jnp.array([[1., 0., 0., 0.], [0., 0., 0., 0.]])
  adv = advantages.batched_grpo_advantages(reward, mask)
  tail = jnp.array([True, False, False, False, True, True])
  s = {k: float(v) for k, v in diagnostics.group_stats(
      cands, reward, adv, jnp.array([3, 5]), tail).items()}
  assert s['target_in_group'] == 0.5           # user 0 has 3; user 1 lacks 5
  assert s['zero_adv_frac'] == 0.5
  assert s['unique_items'] == (3 + 3) / 2
  assert s['distinct_l1'] == (2 + 2) / 2
  assert s['distinct_l2'] == (3 + 2) / 2
  assert s['rollout_cost'] == 11
  np.testing.assert_allclose(s['reward_std'], (math.sqrt(2 / 9) + 0) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(s['long_tail_share'], (2 + 2) / 7, rtol=1e-6)


def test_ved_tree_stats_hand_computed():
  from vstar_jax.rl import diagnostics  # pylint: disable=g-import-not-at-top
  from vstar_jax.decoding.ved import tree as tree_lib  # pylint: disable=g-import-not-at-top
  tree = tree_lib.empty_tree(2, 5, 3, {})
  # User 0: leaves (depth 2) items 7, 8, 9; the target 8 has the best value
  # but the worst log-prob. User 1: no leaf is the target.
  tree = tree.replace(
      live=jnp.array([[True] * 5, [True, True, True, False, False]]),
      depth=jnp.array([[0, 2, 2, 2, 1], [0, 1, 2, 0, 0]]),
      prefix=jnp.array([[0, 7, 8, 9, 8], [0, 1, 4, -1, -1]]),
      value=jnp.array([[0., .1, .9, .2, 5.], [0., 0., 0., 0., 0.]]),
      logp=jnp.array([[0., -1., -3., -2., -.1], [0., -1., -2., 0., 0.]]))
  from vstar_jax.decoding.ved import search  # pylint: disable=g-import-not-at-top
  trie = types.SimpleNamespace(num_levels=2)   # unused with leaf evaluation
  s = {k: float(v) for k, v in diagnostics.ved_tree_stats(
      tree, jnp.array([8, 5]), trie,
      search.VedConfig(budget=5, num_candidates=2)).items()}
  assert s['complete_leaves'] == (3 + 1) / 2
  assert s['target_in_tree'] == 0.5
  assert s['target_top_g_by_value'] == 0.5     # rank 0 of 3 by value
  assert s['target_top_g_by_logp'] == 0.0      # rank 2 of 3 by log-prob
  # User 0 only: the target beats both others by value, neither by logp;
  # by logp + V: 8 -> -2.1, 7 -> -0.9, 9 -> -1.8.
  assert s['value_auc'] == 1.0 and s['logp_auc'] == 0.0
  assert s['mixed_auc'] == 0.0
