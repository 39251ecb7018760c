"""The history rule (config.eval.exclude_history), the same for every model."""
import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax.eval import evaluate
from vstar_jax.eval import history_rule
from vstar_jax.eval import ranking
from vstar_jax.models import policy
from vstar_jax.models import sasrec
from tests import toys

# One user; history (newest last) = [pad, 2, 7]; the target is item 3.
HISTORY = jnp.array([[-1, 2, 7]], jnp.int32)
MASK = jnp.array([[False, True, True]])
TARGET = np.array([3])


def test_dropping_a_top1_history_item_moves_the_target_up():
  # A SID model's beam: its last history item (7) first, the target second.
  items = jnp.array([[7, 3, 5, 2, 9]], jnp.int32)
  scores = jnp.array([[-0.1, -0.5, -1.0, -2.0, -3.0]])
  codes = jnp.arange(5)[None, :, None] * jnp.ones((1, 1, 2), jnp.int32)
  new_items, new_scores, new_codes = history_rule.drop_history_items(
      items, scores, HISTORY, MASK, codes)
  np.testing.assert_array_equal(new_items, [[3, 5, 9, -1, -1]])
  np.testing.assert_array_equal(new_scores,
                                [[-0.5, -1.0, -3.0, -np.inf, -np.inf]])
  np.testing.assert_array_equal(new_codes[0, :3, 0], [1, 2, 4])
  assert ranking.target_ranks(np.asarray(items), TARGET)[0] == 1
  assert ranking.target_ranks(np.asarray(new_items), TARGET)[0] == 0


def test_masking_a_top1_history_item_moves_the_target_up():
  # An ID model's logits over 8 items: history item 7 is the argmax.
  logits = jnp.array([[0., 1., 2., 5., 0., 0., 0., 9.]])
  masked = history_rule.mask_history_scores(logits, HISTORY, MASK)
  np.testing.assert_array_equal(
      masked, [[0., 1., -np.inf, 5., 0., 0., 0., -np.inf]])
  before = np.asarray(jax.lax.top_k(logits, 3)[1])
  after = np.asarray(jax.lax.top_k(masked, 3)[1])
  assert ranking.target_ranks(before, TARGET)[0] == 1
  assert ranking.target_ranks(after, TARGET)[0] == 0


def test_padding_never_matches_an_item():
  # Padded history columns hold -1 and item 0 is a real item.
  hist = jnp.array([[0, 4]], jnp.int32)
  mask = jnp.array([[False, True]])
  got = history_rule.in_history(jnp.array([[0, 4, -1]]), hist, mask)
  np.testing.assert_array_equal(got, [[False, True, False]])


@pytest.fixture(scope='module')
def tiny_sasrec():
  net = sasrec.SASRec(sasrec.SasrecConfig(
      num_items=12, max_history=4, width=16, num_layers=1, num_heads=1,
      inner_width=32, hidden_dropout_rate=0.0, attn_dropout_rate=0.0))
  params = jax.jit(functools.partial(sasrec.init_params, net))(
      jax.random.key(0))
  rng = np.random.default_rng(0)
  history = jnp.asarray(rng.integers(0, 12, (5, 4)), jnp.int32)
  mask = jnp.asarray(rng.random((5, 4)) < 0.7).at[:, -1].set(True)
  return net, params, history, mask


def test_sasrec_excludes_exactly_the_history(tiny_sasrec):
  net, params, history, mask = tiny_sasrec

  @jax.jit
  def both(p, h, m):
    return (net.apply({'params': p}, h, m),
            sasrec.top_items(net, p, h, m, list_len=6, exclude_history=True),
            sasrec.top_items(net, p, h, m, list_len=6))
  logits, res, plain = both(params, history, mask)
  logits = np.asarray(logits)
  for u in range(history.shape[0]):
    seen = set(np.asarray(history[u])[np.asarray(mask[u])].tolist())
    order = [i for i in np.argsort(-logits[u], kind='stable')
             if i not in seen][:6]
    np.testing.assert_array_equal(res.items[u], order)
  # Off (the default): the plain top-K of the logits.
  np.testing.assert_array_equal(plain.items,
                                jax.lax.top_k(jnp.asarray(logits), 6)[1])


def test_sasrec_list_longer_than_the_unseen_items_ends_in_empty_slots(
    tiny_sasrec):
  net, params, _, _ = tiny_sasrec
  history = jnp.arange(4, dtype=jnp.int32)[None]
  res = jax.jit(lambda p, h: sasrec.top_items(
      net, p, h, jnp.ones((1, 4), bool), list_len=12, exclude_history=True))(
          params, history)
  np.testing.assert_array_equal(np.sort(res.items[0, :8]), np.arange(4, 12))
  np.testing.assert_array_equal(res.items[0, 8:], -1)


POLICY = toys.policy_config(num_levels=2, num_heads=1, mlp_ratio=2)


def test_sid_and_id_paths_apply_the_same_rule(random_catalogue):
  """With an exact beam (width = catalogue), the SID rank function under
  the rule equals the ID rule applied to the SID model's item scores."""
  sids, trie = random_catalogue(np.random.default_rng(1), 4, 2, 40)
  num_items = len(sids)
  net = policy.PolicyValueNet(POLICY)
  params = jax.jit(policy.init_params, static_argnums=0)(
      POLICY, jax.random.key(2))
  rng = np.random.default_rng(3)
  history = jnp.asarray(rng.integers(0, num_items, (6, 4)), jnp.int32)
  mask = jnp.asarray(rng.random((6, 4)) < 0.8).at[:, -1].set(True)
  keep_fn, drop_fn = (
      evaluate.make_rank_fn(net, beam_width=num_items, exclude_history=e)
      for e in (False, True))
  traces = []

  @jax.jit
  def both(*args):
    traces.append(1)
    return keep_fn(*args), drop_fn(*args)
  both(params, trie, history, mask)
  full, dropped = both(params, trie, history, mask)
  assert len(traces) == 1                              # one trace
  # The ID rule on the SID model's scores of every item.
  scores = jnp.full((6, num_items), -jnp.inf).at[
      jnp.arange(6)[:, None], full.items].set(full.scores)
  masked = history_rule.mask_history_scores(scores, history, mask)
  want_scores, want_items = jax.lax.top_k(masked, num_items)
  want_items = jnp.where(jnp.isfinite(want_scores), want_items, -1)
  np.testing.assert_array_equal(dropped.items, want_items)
  chex.assert_trees_all_close(dropped.scores, want_scores)
  # Codes follow their items.
  real = np.asarray(dropped.items) >= 0
  np.testing.assert_array_equal(
      np.asarray(dropped.codes)[real], sids[np.asarray(dropped.items)[real]])


def test_bad_value_is_a_one_line_config_error(smoke_dict):
  config = smoke_dict().to_dict()
  config['eval']['exclude_history'] = 'yes'
  with pytest.raises(errors.ConfigError) as e:
    config_lib.parse(config)
  assert str(e.value) == (
      "config.eval.exclude_history='yes': expected True or False")


def test_rule_is_stated_in_the_ranking_description():
  assert 'NOT masked' in history_rule.describe(False)
  assert 'EXCLUDED' in history_rule.describe(True)


def test_tables_mark_rows_that_exclude_history(tmp_path):
  from launch import make_tables  # pylint: disable=g-import-not-at-top
  test = {'hr@1': 0.1, 'ndcg@10': 0.2}
  for variant, rules in (('keep', [None, False]), ('drop', [True]),
                         ('mixed', [False, True])):
    folder = tmp_path / 'ds' / variant
    folder.mkdir(parents=True)
    for seed, rule in enumerate(rules):
      evaluation = {'beam_width': 50}
      if rule is not None:        # runs before the rule existed lack it
        evaluation['exclude_history'] = rule
      (folder / f'seed{seed}.json').write_text(json.dumps(
          {'metrics': {'sft': {'test': test}}, 'eval': evaluation,
           'timings': {}}))
  with pytest.raises(ValueError, match='mixed: its seeds use different'):
    make_tables.table(str(tmp_path), 'ds')
  (tmp_path / 'ds' / 'mixed' / 'seed1.json').unlink()
  rows = make_tables.table(str(tmp_path), 'ds').splitlines()[2:]
  assert [r.split(' | ')[0] for r in rows] == [
      '| drop (history excluded)', '| keep', '| mixed']
