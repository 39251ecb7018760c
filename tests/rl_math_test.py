"""Rewards, GRPO/Sibling-GRPO advantages and losses against references."""
import collections
import functools
import math
import types

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax.rl import advantages
from vstar_jax.rl import diagnostics
from vstar_jax.rl import losses
from vstar_jax.rl import rewards
from vstar_jax.rl import step as rl_step


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


class PureFunctionsTest(chex.TestCase):
  """Rewards, advantages and losses: the same numbers jitted and not."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(range(6))
  def test_sibling_advantages_match_reference(self, seed):
    rng = np.random.default_rng(seed)
    g, num_levels = 12, 3
    codes = rng.integers(0, 3, (g, num_levels))      # small V: many ties
    case = seed % 3
    if case == 0:
      r = rng.normal(size=g)
    elif case == 1:
      r = np.full(g, 0.7)                            # all-equal rewards
    else:
      r = np.zeros(g)                                # all-zero rewards
    mask = rng.random(g) < 0.85
    adv, rep = self.variant(advantages.sibling_advantages)(
        jnp.asarray(codes), jnp.asarray(r, jnp.float32), jnp.asarray(mask))
    want_adv, want_rep = _sibling_reference(codes, r, mask)
    np.testing.assert_allclose(np.asarray(adv), want_adv, atol=2e-4)
    np.testing.assert_array_equal(np.asarray(rep), want_rep)
    if case:
      assert not np.asarray(adv).any()

  @chex.variants(with_jit=True, without_jit=True)
  def test_sibling_zero_mean_and_singletons(self):
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 2], [1, 2, 0]])
    r = np.array([1.0, 0.0, 0.5, -0.2, 0.3], np.float32)
    adv, rep = self.variant(advantages.sibling_advantages)(
        jnp.asarray(codes), jnp.asarray(r), jnp.ones(5, bool))
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

  @chex.variants(with_jit=True, without_jit=True)
  def test_sibling_min_std_zeroes_only_noise_level_sets(self):
    # Depth 2: siblings under (0,) differ by 1 (std 0.5); under (1,) by
    # rank penalties 0.01 apart (std 0.005), which std + 1e-4 blows up.
    codes = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    r = jnp.array([1.0, 0.0, -0.01, -0.02])
    mask = jnp.ones(4, bool)
    fn = self.variant(advantages.sibling_advantages)
    off, _ = fn(codes, r, mask)
    floored, _ = fn(codes, r, mask, 0.1)
    off, floored = np.asarray(off), np.asarray(floored)
    np.testing.assert_allclose(off[2:, 1], [0.005 / 0.0051, -0.005 / 0.0051],
                               rtol=1e-4)
    assert not floored[2:, 1].any()                 # noise: no advantage
    np.testing.assert_array_equal(floored[:2], off[:2])   # std 0.5 kept
    np.testing.assert_array_equal(floored[:, 0], off[:, 0])  # depth 1 kept
    np.testing.assert_allclose(
        off, _sibling_reference(np.asarray(codes), np.asarray(r),
                                np.ones(4, bool))[0], rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sibling_groups_never_mix_prompts(self):
    codes = jnp.array([[[0, 0], [0, 1]], [[0, 0], [0, 1]]])
    r = jnp.array([[1., 0.], [0., 0.]])
    adv, _ = self.variant(advantages.batched_sibling_advantages)(
        codes, r, jnp.ones((2, 2), bool))
    assert np.asarray(adv[1]).sum() == 0
    assert np.abs(np.asarray(adv[0])).sum() > 0

  @chex.variants(with_jit=True, without_jit=True)
  def test_grpo_hand_computed(self):
    fn = self.variant(advantages.grpo_advantages)
    r = jnp.array([1., 0., 0., 0.5, 9.])
    mask = jnp.array([True, True, True, True, False])
    adv = np.asarray(fn(r, mask))
    mean = 1.5 / 4
    std = math.sqrt(((1 - mean) ** 2 + 2 * mean ** 2 + (0.5 - mean) ** 2) / 4)
    np.testing.assert_allclose(adv[:4], (np.array([1, 0, 0, .5]) - mean) /
                               (std + 1e-4), rtol=1e-5)
    assert adv[4] == 0
    assert not np.asarray(fn(jnp.zeros(4), jnp.ones(4, bool))).any()

  @chex.variants(with_jit=True, without_jit=True)
  def test_ranking_reward_hand_computed(self):
    items = jnp.array([5, 7, 9, 11])
    logp = jnp.array([-1., -0.5, -3., -2.])     # ranks: 1, 0, 3, 2
    mask = jnp.array([True, True, True, True])
    fn = self.variant(rewards.ranking_reward)
    r = np.asarray(fn(items, logp, mask, 9))
    a = {r: 1 / math.log2(r + 2) for r in range(4)}
    s = sum(a.values())                         # over all four ranks
    np.testing.assert_allclose(r, [-a[1] / s, -a[0] / s, 1.0, -a[2] / s],
                               rtol=1e-6)
    assert not np.asarray(fn(items, logp, mask, 3)).any()   # target absent

  @chex.variants(with_jit=True, without_jit=True)
  def test_group_reward_kinds(self):
    items, mask = jnp.array([4, 6]), jnp.array([True, True])
    codes = jnp.array([[1, 2, 3], [1, 0, 3]])
    target, target_codes = jnp.int32(6), jnp.array([1, 2, 0])
    def reward(kind):
      return np.asarray(self.variant(functools.partial(
          rewards.group_reward, kind))(items, codes, jnp.zeros(2), mask,
                                       target, target_codes))
    np.testing.assert_allclose(reward('prefix'), [2 / 3, 1 / 3])
    np.testing.assert_array_equal(reward('exact'), [0., 1.])
    with pytest.raises(ValueError, match='unknown reward kind'):
      reward('dcg')

  @chex.variants(with_jit=True, without_jit=True)
  def test_dense_rewards_and_td_hand_computed(self):
    codes = jnp.array([[0, 1], [0, 2], [1, 0]])
    emb = jnp.array([[1., 0.], [0., 1.], [1., 1.]])
    target_emb = jnp.array([1., 0.])
    target_codes = jnp.array([0, 2])
    w = jnp.array([0.3, 1.0])
    r = np.asarray(self.variant(rewards.dense_step_rewards)(
        codes, jnp.ones(3, bool), emb, target_emb, target_codes, w))
    # Depth 1: candidates 0, 1 match the target prefix (0,) -> 0.3;
    # candidate 2's group is itself: cos((1,1),(1,0)) = 1/sqrt(2).
    np.testing.assert_allclose(r[:, 0], [0.3, 0.3,
                                         -0.3 * (1 - 1 / math.sqrt(2))],
                               rtol=1e-6)
    np.testing.assert_allclose(r[:, 1], [-1.0 * (1 - 1.0), 1.0,
                                         -1.0 * (1 - 1 / math.sqrt(2))],
                               rtol=1e-6, atol=1e-7)
    values = jnp.array([0.1, 0.2, 0.4])
    t = np.asarray(self.variant(rewards.td_targets)(
        jnp.array([0.3, 1.0]), values, 0.99))
    np.testing.assert_allclose(t, [0.99 * 0.2, 0.3 + 0.99 * 0.4, 1.0],
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_nonnegative_zero_at_reference(self):
    rng = np.random.default_rng(0)
    logp = jnp.asarray(-rng.random((4, 3)) * 3, jnp.float32)
    ref = jnp.asarray(-rng.random((4, 3)) * 3, jnp.float32)
    mask = jnp.ones((4, 3), bool)
    kl = self.variant(losses.k3_kl)
    d = np.asarray(ref - logp)
    np.testing.assert_allclose(kl(logp, ref, mask), np.exp(d) - d - 1,
                               rtol=1e-5, atol=1e-7)
    assert (np.asarray(kl(logp, ref, mask)) >= 0).all()
    assert not np.asarray(kl(logp, logp, mask)).any()

  @chex.variants(with_jit=True, without_jit=True)
  def test_clipped_surrogate_hand_computed(self):
    # Ratios e^0.5, e^-0.5, e^0.05, 1 (masked); eps 0.2.
    logp = jnp.array([[0.5, -0.5], [0.05, -9.]])
    old = jnp.zeros((2, 2))
    adv = jnp.array([[1., -1.], [2., 5.]])
    mask = jnp.array([[True, True], [True, False]])
    got = np.asarray(self.variant(losses.clipped_surrogate)(
        logp, old, adv, mask, 0.2))
    # A > 0 caps the ratio at 1.2; A < 0 floors it at 0.8; inside: r * A.
    np.testing.assert_allclose(got, [[1.2, -0.8], [2 * math.exp(0.05), 0.]],
                               rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_td_loss_hand_computed(self):
    values = jnp.array([[1., 2.], [3., 4.], [9., 9.]])
    targets = jnp.array([[0., 2.], [3., 2.], [0., 0.]])
    got = self.variant(losses.value_td_loss)(
        values, targets, jnp.array([True, True, False]))
    np.testing.assert_allclose(got, (1. + 0. + 0. + 4.) / 4, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 1.0)
  def test_group_loss_hand_computed(self, policy_on):
    # G = 4 (the last masked), L = 2, on-policy (ratio 1), reference = pi.
    logp = jnp.log(jnp.array([[.5, .5], [.25, .5], [.5, 1.], [1., 1.]]))
    mask = jnp.array([True, True, True, False])
    signal = rl_step.GroupSignal(
        reward=jnp.zeros(4), adv=jnp.array([1., -.5, 2., 7.]),
        sib_adv=jnp.array([[1., 0.], [-1., 3.], [-1., 3.], [5., 5.]]),
        sib_rep=jnp.array([[True, True], [True, True], [False, False],
                           [True, True]]),
        dense=jnp.ones((4, 2)))
    cfg = rl_step.RLConfig(
        reward='ranking', grpo_weight=1.0, sibling_alpha=1.0,
        sibling_min_std=0.0, clip_eps=0.2, updates_per_rollout=1,
        kl_beta=1e-3, value_coef=0.5, gamma=0.99, step_weights=(1., 1.),
        value_warmup_steps=0)
    loss, parts = self.variant(functools.partial(rl_step.group_loss,
                                                 cfg=cfg))(
        logp, logp, logp, jnp.zeros((4, 3)), signal, mask,
        jnp.float32(policy_on))
    j_grpo = (1. - .5 + 2.) * 2 / (3 * 2)        # ratio 1: sum of A / |C| L
    j_sib = (1. + 0. - 1. + 3.) / 3              # representatives only
    value_loss = 2 / 3     # targets (0, 1, 1) against values 0, per row
    np.testing.assert_allclose(parts.j_grpo, j_grpo, rtol=1e-6)
    np.testing.assert_allclose(parts.j_sib, j_sib, rtol=1e-6)
    np.testing.assert_allclose(parts.value_loss, value_loss, rtol=1e-6)
    assert float(parts.kl) == 0
    np.testing.assert_array_equal(parts.ratio, np.ones((4, 2)))
    np.testing.assert_allclose(
        loss, -(j_grpo + j_sib) * policy_on + 0.5 * value_loss, rtol=1e-6)


def test_loss_stats_clip_fraction_and_ratio_deviation():
  ratio = jnp.array([[[1., 1.3], [0.7, 1.1]], [[1.5, 1.5], [9., 9.]]])
  parts = rl_step.GroupLossParts(
      j_grpo=jnp.zeros(2), j_sib=jnp.zeros(2), kl=jnp.array([1., 3.]),
      value_loss=jnp.array([2., 4.]), ratio=ratio)
  mask = jnp.array([[True, True], [True, False]])      # 6 real tokens
  s = diagnostics.loss_stats(parts, mask, jnp.array([1., 0.]),
                             jnp.ones((2, 2, 2)), jnp.zeros((2, 2, 3)), 0.2)
  np.testing.assert_allclose(s['clip_frac'], 4 / 6)  # 1.3, .7, 1.5, 1.5
  np.testing.assert_allclose(s['ratio_dev'], (0 + .3 + .3 + .1 + 1.) / 6,
                             rtol=1e-6)
  assert float(s['kl']) == 1 and float(s['value_loss']) == 2  # prompt 0 only
  assert float(s['entropy']) == 1


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
