"""Per-user ranks, the paired bootstrap and `launch.compare`."""
import collections
import dataclasses
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.eval import evaluate
from vstar_jax.eval import gain_breakdown
from vstar_jax.eval import paired
from vstar_jax.eval import user_ranks
from vstar_jax.train import loop


def _loop_percentile(sorted_values, q):
  """numpy's default ('linear') percentile, by hand."""
  pos = q / 100 * (len(sorted_values) - 1)
  lo = math.floor(pos)
  hi = min(lo + 1, len(sorted_values) - 1)
  return sorted_values[lo] + (pos - lo) * (sorted_values[hi] -
                                           sorted_values[lo])


def _loop_bootstrap_ci(diff, num_resamples, seed, level):
  """Reference: one resample at a time, plain Python sums."""
  means = []
  for r in range(num_resamples):
    rows = np.random.default_rng([seed, r]).integers(0, len(diff), len(diff))
    means.append(sum(float(diff[i]) for i in rows) / len(diff))
  means.sort()
  tail = 100 * (1 - level) / 2
  return _loop_percentile(means, tail), _loop_percentile(means, 100 - tail)


@pytest.mark.parametrize('level', [0.95, 0.8])
def test_bootstrap_ci_matches_loop_reference(level):
  rng = np.random.default_rng(7)
  a = rng.random((11, 2))          # an odd number of rows, two metrics
  b = rng.random((11, 2))
  deltas = paired.paired_deltas(a, b, ['ndcg@10', 'hr@10'],
                                num_resamples=300, seed=5, level=level)
  for d, delta in enumerate(deltas):
    lo, hi = _loop_bootstrap_ci(a[:, d] - b[:, d], 300, 5, level)
    assert delta.ci == pytest.approx((lo, hi), abs=1e-12)
    assert delta.diff == pytest.approx((a[:, d] - b[:, d]).mean())
    assert delta.rel == pytest.approx(delta.diff / b[:, d].mean())
  assert deltas[0].ci != deltas[1].ci


def test_bootstrap_is_independent_of_chunking(monkeypatch):
  values = np.random.default_rng(0).random((13, 2))
  whole = paired.bootstrap_means(values, num_resamples=50, seed=1)
  monkeypatch.setattr(paired, '_MAX_CHUNK_ELEMENTS', 13 * 3)  # 3 at a time
  np.testing.assert_array_equal(
      paired.bootstrap_means(values, num_resamples=50, seed=1), whole)
  assert not np.array_equal(
      paired.bootstrap_means(values, num_resamples=50, seed=2), whole)


def test_many_pairs_share_draws_and_match_the_loop_reference():
  """Pairs of two row counts, interleaved: each pair's CI is the loop
  reference's (its own resamples), whatever it was batched with."""
  rng = np.random.default_rng(3)
  pairs = [(rng.random((m, 1)), rng.random((m, 1))) for m in (9, 14, 9)]
  many = paired.paired_deltas_many(pairs, ['ndcg@10'], num_resamples=200,
                                   seed=4)
  for (a, b), (delta,) in zip(pairs, many):
    assert delta.rows == len(a)
    assert delta.ci == pytest.approx(
        _loop_bootstrap_ci(a[:, 0] - b[:, 0], 200, 4, 0.95), abs=1e-12)
    assert delta.mean_a == pytest.approx(a.mean())
  with pytest.raises(ValueError, match='must both be'):
    paired.paired_deltas_many([(np.zeros((3, 1)), np.zeros((4, 1)))],
                              ['ndcg@10'])


def test_bootstrap_degenerate_cases():
  # A constant difference: every resample mean is that constant.
  const = paired.paired_deltas(np.full((5, 1), 0.3), np.full((5, 1), 0.1),
                               ['hr@10'], num_resamples=1000)[0]
  assert const.ci == pytest.approx((0.2, 0.2))
  assert const.excludes_zero
  # Two rows 0 and 1: resample means 0, 1/2, 1 with probability 1/4, 1/2,
  # 1/4, so the 2.5% and 97.5% percentiles are 0 and 1.
  two = paired.paired_deltas(np.array([[0.], [1.]]), np.zeros((2, 1)),
                             ['hr@10'])[0]
  assert two.ci == (0.0, 1.0) and not two.excludes_zero


def test_bootstrap_ci_width_matches_normal_theory():
  diff = np.random.default_rng(3).normal(0.01, 0.1, size=(4000, 1))
  d = paired.paired_deltas(diff, np.zeros_like(diff), ['ndcg@10'])[0]
  half = 1.96 * diff.std() / np.sqrt(len(diff))
  assert d.ci[0] == pytest.approx(diff.mean() - half, abs=0.15 * half)
  assert d.ci[1] == pytest.approx(diff.mean() + half, abs=0.15 * half)


Result = collections.namedtuple('Result', 'items scores')


def test_metrics_are_means_of_the_written_ranks():
  """evaluate's metrics equal the per-user metrics of its ranks."""
  rng = np.random.default_rng(0)
  num_items, k, num_users = 40, 12, 37
  # Fake ranker: the list of a user is a fixed random list of its last item.
  table = np.stack([rng.permutation(num_items)[:k] for _ in range(num_items)])
  table[::5, -3:] = -1                            # some empty slots
  rank_fn = jax.jit(lambda params, trie, h, m: Result(
      params[h[:, -1]], jnp.zeros(h.shape[:1] + (k,))))
  history = rng.integers(0, num_items, (num_users, 3)).astype(np.int32)
  targets = rng.integers(0, num_items, num_users).astype(np.int32)
  targets[::3] = table[history[::3, -1], 2]       # some hits at rank 2
  kwargs = dict(batch_size=8, list_len=k, item_codes=None,
                cutoffs=(1, 5, 10))
  mask = np.ones_like(history, bool)
  metrics, ranks = evaluate.evaluate_ranks(
      rank_fn, jnp.asarray(table), None, history, mask, targets, **kwargs)
  assert evaluate.evaluate(rank_fn, jnp.asarray(table), None, history, mask,
                           targets, **kwargs) == metrics
  expected = [table[h].tolist().index(t) if t in table[h] else k
              for h, t in zip(history[:, -1], targets)]
  np.testing.assert_array_equal(ranks, expected)
  assert (ranks == 2).sum() >= num_users // 3 and (ranks == k).any()
  for cutoff in (1, 5, 10):
    for name in ('hr', 'ndcg'):
      m = f'{name}@{cutoff}'
      assert user_ranks.per_user_metric(ranks, m).mean() == metrics[m]
  by_hand = np.mean([1 / np.log2(r + 2) if r < 10 else 0 for r in expected])
  assert metrics['ndcg@10'] == pytest.approx(by_hand)


def _ranks(rank, user=None, list_len=50):
  rank = np.asarray(rank, np.int32)
  user = np.arange(len(rank)) if user is None else np.asarray(user)
  return user_ranks.UserRanks(user=user.astype(np.int32),
                              target=(user * 7 % 11).astype(np.int32),
                              rank=rank, list_len=list_len)


def test_write_read_round_trip_and_errors(tmp_path):
  report = tmp_path / 'run' / 'results.json'
  ranks = _ranks([0, 3, 50, 9])
  user_ranks.write(report, 'rl', {'valid': ranks, 'test': ranks})
  folder = tmp_path / 'run' / 'results.user_ranks'
  assert sorted(p.name for p in folder.iterdir()) == ['rl_test.npz',
                                                      'rl_valid.npz']
  back = user_ranks.read(folder, 'rl', 'test')
  for field in ('user', 'target', 'rank'):
    np.testing.assert_array_equal(getattr(back, field), getattr(ranks, field))
  assert back.list_len == 50
  assert user_ranks.resolve(str(tmp_path / 'run')) == folder
  assert user_ranks.resolve(str(report)) == folder
  assert user_ranks.stages_in(folder, 'test') == ['rl']
  with pytest.raises(files.DataError, match='sft_test.npz: per-user rank '
                     'file not found'):
    user_ranks.read(folder, 'sft', 'test')
  with pytest.raises(files.DataError, match='no per-user ranks'):
    user_ranks.resolve(str(tmp_path / 'missing'))
  (folder / 'sft_test.npz').write_bytes(user_ranks.encode(_ranks([51])))
  with pytest.raises(files.DataError, match=r'outside \[0, list_len=50\]'):
    user_ranks.read(folder, 'sft', 'test')


def _run_dir(root, name, by_stage):
  """A fake launch.train workdir with per-user ranks of each stage."""
  for stage, rank in by_stage.items():
    user_ranks.write(root / name / 'results.json', stage,
                     {'valid': _ranks(rank), 'test': _ranks(rank)})
  return str(root / name)


@pytest.fixture
def compare(repo_root):
  """`compare(*args, cwd)`: launch.compare run in `cwd`."""
  def run(*args, cwd):
    return subprocess.run(
        [sys.executable, '-m', 'launch.compare', *args], cwd=cwd,
        capture_output=True, text=True, timeout=120,
        env={'PYTHONPATH': str(repo_root)})
  return run


@pytest.mark.slow
def test_cli_single_runs_and_stage_selection(tmp_path, compare):
  rng = np.random.default_rng(1)
  sft, rl = rng.integers(0, 51, 300), rng.integers(0, 51, 300)
  run = _run_dir(tmp_path, 'run', {'sft': sft, 'rl': rl})
  out = compare(run, run, '--stage_b=sft', f'--out={tmp_path}/cmp',
                cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  assert '| ndcg@10 |' in out.stdout and '| hr@10 |' in out.stdout
  report = json.loads((tmp_path / 'cmp.json').read_text())
  assert (report['stage_a'], report['stage_b']) == ('rl', 'sft')
  ndcg = report['deltas'][0]
  expected = (user_ranks.per_user_metric(rl, 'ndcg@10') -
              user_ranks.per_user_metric(sft, 'ndcg@10')).mean()
  assert ndcg['metric'] == 'ndcg@10'
  assert ndcg['diff'] == pytest.approx(expected)
  assert ndcg['ci'][0] < ndcg['diff'] < ndcg['ci'][1]
  assert ndcg['rows'] == 300 and report['num_resamples'] == 10000
  assert (tmp_path / 'cmp.md').read_text() == out.stdout


@pytest.mark.slow
def test_cli_seed_groups_average_per_user(tmp_path, compare):
  rng = np.random.default_rng(2)
  ranks_a = [rng.integers(0, 51, 200) for _ in range(3)]
  ranks_b = [rng.integers(0, 51, 200) for _ in range(2)]
  runs_a = [_run_dir(tmp_path, f'a{i}', {'rl': r})
            for i, r in enumerate(ranks_a)]
  runs_b = [_run_dir(tmp_path, f'b{i}', {'sft': r})
            for i, r in enumerate(ranks_b)]
  out = compare('--a=' + ','.join(runs_a), '--b=' + ','.join(runs_b),
                '--num_resamples=500', f'--out={tmp_path}/g', cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  hr = json.loads((tmp_path / 'g.json').read_text())['deltas'][1]
  mean_a = np.mean([user_ranks.per_user_metric(r, 'hr@10') for r in ranks_a],
                   axis=0)
  mean_b = np.mean([user_ranks.per_user_metric(r, 'hr@10') for r in ranks_b],
                   axis=0)
  lo, hi = _loop_bootstrap_ci(mean_a - mean_b, 500, 0, 0.95)
  assert hr['metric'] == 'hr@10'
  assert hr['diff'] == pytest.approx((mean_a - mean_b).mean())
  assert hr['ci'] == pytest.approx([lo, hi], abs=1e-12)


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, compare):
  good = _run_dir(tmp_path, 'good', {'sft': [0, 1, 2, 3]})
  other = tmp_path / 'other' / 'results.json'
  user_ranks.write(other, 'sft', {'test': _ranks([0, 1, 2, 3],
                                                 user=[0, 1, 2, 4])})
  cases = [
      ((good, str(tmp_path / 'other')), 'evaluated different users'),
      ((good, str(tmp_path / 'nothing')), 'no per-user ranks'),
      ((good, good, '--stage_a=rl'), 'rl_test.npz: per-user rank file not '
       'found'),
      ((good, good, '--metrics=ndcg@60'), 'needs a ranked list of at least'),
      ((good,), 'expected RUN_A RUN_B'),
  ]
  for args, message in cases:
    out = compare(*args, f'--out={tmp_path}/bad', cwd=tmp_path)
    assert out.returncode == 1, args
    assert out.stderr.startswith('compare: error: ') and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob('bad*'))


@pytest.mark.slow
def test_runs_write_ranks_and_ce_control_starts_from_init(tmp_path,
                                                          smoke_config,
                                                          capsys):
  """A run writes per-user ranks of its metrics and prints RL's paired
  difference to SFT; an SFT stage with init_from starts from that run (at
  learning rate 0 it stays there)."""
  base = loop.train_and_evaluate(
      smoke_config(**{'stages': 'sft,rl', 'rollout.kind': 'beam',
                      'rl.num_steps': 2}), str(tmp_path / 'sft'))
  printed = capsys.readouterr().out
  folder = user_ranks.resolve(str(tmp_path / 'sft'))
  for split in ('valid', 'test'):
    for stage in ('sft', 'rl'):
      ranks = user_ranks.read(folder, stage, split)
      for m in ('hr@1', 'ndcg@10', 'ndcg@20'):
        assert (user_ranks.per_user_metric(ranks.rank, m).mean() ==
                base['metrics'][stage][split][m])
    want = paired.compare([folder], [folder], stage_a='rl', stage_b='sft',
                          split=split).deltas
    got = base['paired_vs_first_stage']['rl'][split]
    assert got == [d.to_dict() for d in want]
    assert got[0]['mean_a'] == base['metrics']['rl'][split]['ndcg@10']
    assert (f'| rl vs sft | {split} | ndcg@10 | {got[0]["mean_b"]:.4f} |'
            in printed)
  assert (('rl: no step beat its start' in printed) ==
          (base['stages']['rl']['best_step'] == 0))
  ce_config = smoke_config(**{
      'init_from': str(tmp_path / 'sft'), 'data.fresh_windows': 1,
      'sft.train_on': 'rl_prompts', 'sft.batch_size': 8,
      'sft.num_steps': 2, 'sft.eval_every': 2})
  # Learning rate 0 (config.sft.learning_rate must be > 0 in a run's flags):
  # two steps that must not move the parameters off the initial run.
  ce_config = dataclasses.replace(
      ce_config, sft=dataclasses.replace(ce_config.sft, learning_rate=0.0))
  ce = loop.train_and_evaluate(ce_config, str(tmp_path / 'ce'))
  assert ce['metrics'] == {'sft': base['metrics']['sft']}
  delta = paired.compare([user_ranks.resolve(str(tmp_path / 'ce'))],
                         [folder], stage_b='sft').deltas[0]
  assert delta.diff == 0 and delta.ci == (0.0, 0.0)


def test_stage_deltas_pair_each_later_stage_with_the_first():
  rows = lambda rank: user_ranks.UserRanks(
      np.arange(4), np.arange(4) + 10, np.asarray(rank, np.int32), 20)
  ranks = {'sft': {'test': rows([0, 3, 20, 12])},
           'rl': {'test': rows([1, 0, 5, 20])}}   # 20: not in the list
  (d_ndcg, d_hr), = paired.stage_deltas(ranks,
                                         num_resamples=200)['rl'].values()
  per_user = lambda r, m: user_ranks.per_user_metric(np.asarray(r), m)
  want = paired.paired_deltas(
      np.stack([per_user([1, 0, 5, 20], m) for m in ('ndcg@10', 'hr@10')], 1),
      np.stack([per_user([0, 3, 20, 12], m) for m in ('ndcg@10', 'hr@10')],
               1), ('ndcg@10', 'hr@10'), num_resamples=200)
  assert [d_ndcg, d_hr] == want
  assert d_hr.diff == 0.25            # hits 3 of 4 vs 2 of 4
  assert paired.stage_deltas({'sft': ranks['sft']}) == {}
  other = {'sft': ranks['sft'], 'rl': {'test': user_ranks.UserRanks(
      np.arange(4), np.arange(4), np.zeros(4, np.int32), 20)}}
  with pytest.raises(files.DataError, match='different users/targets'):
    paired.stage_deltas(other)
  table = paired.stage_deltas_markdown({'rl': {'test': [d_hr]}}, 'sft')
  assert table.splitlines()[2].startswith('| rl vs sft | test | hr@10 | '
                                          '0.5000 | 0.7500 | +0.2500 (+50.0%)')


def test_gain_breakdown_groups_and_contributions(tmp_path):
  # 10 items; SFT targets make items 0 and 1 the popular decile (top 1 item
  # plus its tie); the fresh targets are items 1 and 5.
  sft = np.array([0] * 5 + [1] * 5 + [2, 3, 4, 5, 6, 7, 8, 9])
  fresh = np.array([1, 1, 5, 5])
  groups = gain_breakdown.item_groups(sft, fresh, 10, top_fraction=0.1,
                                      trend=1.5)
  # Item 1: fresh share 0.5 over (5 + 1) / 28 -> 2.33, up; item 5: 0.5 over
  # 2 / 28 -> 7, up; item 0: popular, no fresh target.
  np.testing.assert_array_equal(groups, [1, 0, 3, 3, 3, 2, 3, 3, 3, 3])
  diff = np.array([0.5, -0.25, 0.25, 0.])
  contrib, lo, hi = gain_breakdown.contributions(diff, np.array([0, 1, 0, 3]))
  np.testing.assert_allclose(contrib, [0.1875, -0.0625, 0., 0.])
  assert contrib.sum() == pytest.approx(diff.mean())
  # Group 0's CI is the loop reference's CI of its masked column.
  assert (lo[0], hi[0]) == pytest.approx(_loop_bootstrap_ci(
      np.array([0.5, 0., 0.25, 0.]), paired.NUM_RESAMPLES, 0, 0.95),
                                         abs=1e-12)
  assert lo[2] == hi[2] == 0.
  run = tmp_path / 'seed0.json'
  run.write_text(json.dumps({'config': {'data': {'fresh_windows': 0}}}))
  with pytest.raises(errors.ConfigError, match='fresh_windows'):
    gain_breakdown.item_groups_of_run(str(run), top_fraction=0.1, trend=1.5)
