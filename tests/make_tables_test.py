"""WORKSPACE.md tables are built from results/ (and are fresh)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from vstar_jax.eval import paired
from vstar_jax.eval import ranking
from vstar_jax.eval import user_ranks


def _result(ndcg10, device='cpu'):
  test = {'hr@1': 0.1, 'hr@3': 0.2, 'hr@5': 0.3, 'hr@10': 0.4,
          'ndcg@3': 0.15, 'ndcg@5': 0.2, 'ndcg@10': ndcg10}
  return {'metrics': {'sft': {'valid': test, 'test': test}},
          'eval': {'beam_width': 50}, 'timings': {'wall_s': 120.0},
          'device': device}


@pytest.fixture
def make_tables(repo_root):
  """`make_tables(*args, cwd)`: launch.make_tables run in `cwd`."""
  def run(*args, cwd):
    return subprocess.run([sys.executable, '-m', 'launch.make_tables', *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={'PYTHONPATH': str(repo_root)})
  return run


@pytest.mark.slow
def test_table_mean_std_and_check(tmp_path, make_tables):
  for seed, (v, device) in enumerate([(0.1, 'cpu'), (0.3, 'NVIDIA H200')]):
    d = tmp_path / 'results' / 'toyds' / 'sft'
    d.mkdir(parents=True, exist_ok=True)
    (d / f'seed{seed}.json').write_text(json.dumps(_result(v, device)))
  ws = tmp_path / 'WORKSPACE.md'
  ws.write_text('intro\n<!-- table:toyds -->\nold\n<!-- /table:toyds -->\n')
  assert make_tables('--check', cwd=tmp_path).returncode == 1
  out = make_tables(cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  text = ws.read_text()
  assert '| sft | sft | 2 | 50 |' in text
  assert '0.2000 ± 0.1000' in text          # ndcg@10 over the two seeds
  assert '| 2.0 (H200, 1), 2.0 (cpu, 1) |' in text   # wall time per device
  assert make_tables('--check', cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_repository_tables_are_fresh(make_tables, repo_root):
  out = make_tables('--check', cwd=repo_root)
  assert out.returncode == 0, out.stderr


def _write_seed(variant_dir, seed, stage, ranks):
  """seed{seed}.json of one stage, with its per-user ranks beside it."""
  variant_dir.mkdir(parents=True, exist_ok=True)
  test = ranking.hit_ndcg(ranks, 50, (1, 3, 5, 10))
  result = _result(test['ndcg@10'])
  result['metrics'] = {stage: {'valid': test, 'test': test}}
  path = variant_dir / f'seed{seed}.json'
  path.write_text(json.dumps(result))
  users = np.arange(len(ranks), dtype=np.int32)
  user_ranks.write(path, stage, {'test': user_ranks.UserRanks(
      users, users % 7, np.asarray(ranks, np.int32), 50)})


@pytest.mark.slow
def test_rl_table_has_paired_delta_column(tmp_path, make_tables):
  rng = np.random.default_rng(0)
  root = tmp_path / 'results' / 'toyds'
  sft = [rng.integers(0, 51, 400) for _ in range(2)]
  rl = [np.maximum(r - rng.integers(0, 3, 400), 0) for r in sft]
  for seed in range(2):
    _write_seed(root / 'base', seed, 'sft', sft[seed])
    _write_seed(root / 'vstar', seed, 'rl', rl[seed])
  _write_seed(root / 'ce', 1, 'rl', rl[0])   # one seed: paired with base's
  (root / 'old_rl').mkdir()        # an old result: no per-user ranks
  (root / 'old_rl' / 'seed0.json').write_text(json.dumps(
      {**_result(0.2), 'metrics': {'rl': {'test': _result(0.2)['metrics'][
          'sft']['test']}}}))
  ws = tmp_path / 'WORKSPACE.md'
  ws.write_text('<!-- table:toyds vs=base -->\n<!-- /table:toyds -->\n')
  out = make_tables(cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  lines = ws.read_text().splitlines()
  assert lines[1].endswith('| ndcg@10 Δ vs base [95% CI] |')
  cells = {l.split(' | ')[0][2:]: l.split(' | ')[-1][:-2] for l in lines[3:-1]}
  expected = paired.compare(
      [root / 'vstar' / f'seed{s}.user_ranks' for s in range(2)],
      [root / 'base' / f'seed{s}.user_ranks' for s in range(2)],
      metrics=('ndcg@10',))
  seed1_only = paired.compare([root / 'ce' / 'seed1.user_ranks'],
                              [root / 'base' / 'seed1.user_ranks'],
                              metrics=('ndcg@10',))
  assert cells == {'base': 'ref.', 'old_rl': 'n/a',
                   'vstar': paired.format_delta(expected.deltas[0]),
                   'ce': paired.format_delta(seed1_only.deltas[0])}
  assert expected.deltas[0].diff > 0 and expected.deltas[0].excludes_zero
  # Averaged per user over the two seeds, then paired.
  per_user = [user_ranks.per_user_metric(r, 'ndcg@10')
              for r in rl + sft]
  assert expected.deltas[0].diff == pytest.approx(
      np.mean(per_user[:2]) - np.mean(per_user[2:]))


@pytest.mark.slow
def test_tables_without_rl_have_no_delta_column(tmp_path, make_tables):
  d = tmp_path / 'results' / 'toyds' / 'sft'
  d.mkdir(parents=True)
  (d / 'seed0.json').write_text(json.dumps(_result(0.1)))
  ws = tmp_path / 'WORKSPACE.md'
  ws.write_text('<!-- table:toyds -->\n<!-- /table:toyds -->\n')
  assert make_tables(cwd=tmp_path).returncode == 0
  assert 'Δ' not in ws.read_text()


def test_probe_table_means_over_seeds(tmp_path):
  from launch import make_tables  # pylint: disable=g-import-not-at-top
  d = tmp_path / 'fresh' / 'beam_grpo'
  d.mkdir(parents=True)
  for seed, tig in enumerate((0.2, 0.4)):
    for params in ('start', 'best'):
      probe = {'rollout': {'kind': 'beam', 'beam_width': 16, 'ved_budget': 33},
               'pool': {'target_in_group': tig, 'zero_adv_frac': 1 - tig,
                        'ndcg@10': 0.05, 'prompts': 2000},
               'valid': {'target_in_group': tig / 2, 'zero_adv_frac': 0.9,
                         'prompts': 2000}}
      (d / f'seed{seed}.probe_{params}.json').write_text(json.dumps(probe))
  text = make_tables.probe_table(str(tmp_path), 'fresh')
  assert text.count('| beam_grpo |') == 2
  assert ('| beam_grpo | selected | 2 | beam 16 | 2000 | 0.3000 | 0.7000 | '
          '0.0500 | 0.1500 | 0.9000 |') in text
  with pytest.raises(ValueError, match='no probe files'):
    make_tables.probe_table(str(tmp_path), 'missing')


def _write_ranked_seed(variant_dir, seed, ranks_by_split):
  """seedK.json with both splits' metrics and their per-user ranks."""
  variant_dir.mkdir(parents=True, exist_ok=True)
  metrics = {split: {m: float(user_ranks.per_user_metric(r, m).mean())
                     for m in ('ndcg@5', 'hr@5', 'ndcg@10', 'hr@10')}
             for split, r in ranks_by_split.items()}
  path = variant_dir / f'seed{seed}.json'
  path.write_text(json.dumps({'metrics': {'sft': metrics},
                              'eval': {'beam_width': 50}}))
  users = np.arange(300, dtype=np.int32)
  user_ranks.write(path, 'sft', {
      split: user_ranks.UserRanks(users, users % 7, np.asarray(r, np.int32),
                                  50) for split, r in ranks_by_split.items()})


def test_lever_table_pairs_each_split_with_the_reference(tmp_path):
  from launch import make_tables  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  control = {s: rng.integers(0, 51, 300) for s in ('valid', 'test')}
  better = {s: np.maximum(r - 2, 0) for s, r in control.items()}
  ref_dir = tmp_path / 'other' / 'control'
  _write_ranked_seed(ref_dir, 0, control)
  _write_ranked_seed(tmp_path / 'levers' / 'lever_a', 0, better)
  for seed in (0, 1):           # seed 1 has no control: pairs seed 0 only
    _write_ranked_seed(tmp_path / 'levers' / 'lever_b', seed, control)
  text = make_tables.lever_table(str(tmp_path), 'levers', '../other/control')
  lines = text.splitlines()
  assert lines[0] == ('| variant | seeds | valid ndcg@10 | valid Δ vs control '
                      '[95% CI] | test ndcg@10 | test Δ vs control [95% CI] '
                      '| test hr@10 |')
  rows = {l.split(' | ')[0][2:]: l[2:-2].split(' | ') for l in lines[2:]}
  assert list(rows) == ['control', 'lever_a', 'lever_b']
  assert rows['control'][3] == rows['control'][5] == 'ref.'
  for split, col in (('valid', 3), ('test', 5)):
    want = paired.compare([tmp_path / 'levers' / 'lever_a' / 'seed0.user_ranks'],
                          [ref_dir / 'seed0.user_ranks'], split=split,
                          metrics=('ndcg@10',)).deltas[0]
    assert want.diff > 0
    assert rows['lever_a'][col] == paired.format_delta(want)
    assert rows['lever_b'][col].startswith('+0.0000 (+0.0%)')
  assert rows['lever_b'][1] == '2' and '±' in rows['lever_b'][2]
  with pytest.raises(ValueError, match='vs= reference'):
    make_tables.lever_table(str(tmp_path), 'levers', 'missing')


def test_summary_table_sets_our_rows_beside_published(tmp_path):
  from launch import make_tables  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  ref = {s: rng.integers(0, 51, 300) for s in ('valid', 'test')}
  ours = [{s: np.maximum(r - k, 0) for s, r in ref.items()} for k in (1, 3)]
  _write_ranked_seed(tmp_path / 'a' / 'sasrec', 0, ref)
  for seed, ranks in enumerate(ours):     # seeds 0 and 1, against one seed
    _write_ranked_seed(tmp_path / 'b' / 'sid', seed, ranks)
  (tmp_path / 'summary').mkdir()
  (tmp_path / 'summary' / 'toy.json').write_text(json.dumps({
      'rows': [{'model': 'SASRec', 'results': 'a/sasrec'},
               {'model': 'SID', 'results': 'b/sid'}],
      'published': [{'model': 'TIGER', 'source': 'paper', 'hr@10': 0.0648,
                     'ndcg@10': 'about 0.04'}]}))
  lines = make_tables.summary_table(str(tmp_path), 'toy').splitlines()
  assert lines[0].endswith('| test ndcg@10 Δ vs SASRec [95% CI] |')
  rows = [l[2:-2].split(' | ') for l in lines[2:]]
  assert [r[0] for r in rows] == ['SASRec', 'SID', 'TIGER']
  assert rows[0][-1] == 'ref.' and rows[1][3] == '2'
  # Both SID seeds, averaged per user, against the reference's one seed.
  want = paired.compare([tmp_path / 'b' / 'sid' / f'seed{s}.user_ranks'
                         for s in (0, 1)],
                        [tmp_path / 'a' / 'sasrec' / 'seed0.user_ranks'],
                        split='test', metrics=('ndcg@10',)).deltas[0]
  assert want.diff > 0 and rows[1][-1] == paired.format_delta(want)
  assert rows[2][1:] == ['paper', 'as published', '', '', '', '', '0.0648',
                         'about 0.04', '']
  (tmp_path / 'summary' / 'toy.json').write_text(json.dumps({'rows': []}))
  with pytest.raises(ValueError, match="toy.json: 'published'"):
    make_tables.summary_table(str(tmp_path), 'toy')
