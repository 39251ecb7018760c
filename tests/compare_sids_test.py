"""Tests of launch/compare_sids.py on two tiny generated index files."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vstar_jax.data import sid_index
from vstar_jax.sid import stats

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  return subprocess.run(
      [sys.executable, '-m', 'launch.compare_sids', *args], cwd=REPO,
      capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_compares_build_stats_with_variants(tmp_path):
  native = np.array([[0, 1], [0, 1], [1, 0], [1, 3]], np.int32)
  fixed = np.array([[0, 1], [0, 2], [1, 0], [1, 3]], np.int32)
  for name, codes in [('v_native', native), ('v_zcr', fixed)]:
    sid_index.write_sid_index(
        tmp_path / 'indexes' / name / 'T.index.json.gz', codes,
        [str(i) for i in range(len(codes))])
  built = {'config': {'collisions': 'reassign'},
           'before_resolution': stats.sid_stats(native, 4),
           'after_resolution': stats.sid_stats(fixed, 4)}
  (tmp_path / 'sid_stats.json').write_text(json.dumps(built))
  out = tmp_path / 'cmp'
  result = _run(f'--stats={tmp_path / "sid_stats.json"}',
                f'--indexes={tmp_path}/indexes/*/T.index.json.gz',
                '--codebook_size=4', f'--out={out}')
  assert result.returncode == 0, result.stderr
  rows = json.loads((tmp_path / 'cmp.json').read_text())['rows']
  assert [r['variant'] for r in rows] == [
      'ours (before resolution)', 'ours (reassign)', 'v_native', 'v_zcr']
  assert rows[0] == {**rows[2], 'variant': rows[0]['variant']}
  assert rows[1] == {**rows[3], 'variant': rows[1]['variant']}
  assert rows[2]['tokens_per_level'] == [2, 3]
  assert rows[2]['usage_per_level'] == [0.5, 0.75]
  assert (rows[2]['unique_sids'], rows[2]['colliding_items']) == (3, 2)
  assert rows[3]['tokens_per_level'] == [2, 4]
  assert (rows[3]['unique_sids'], rows[3]['colliding_items']) == (4, 0)
  assert rows[2]['items_per_last_parent_mean'] == 2.
  assert rows[3]['max_siblings_per_depth'] == [2, 2]
  markdown = (tmp_path / 'cmp.md').read_text()
  assert markdown in result.stdout
  assert '| v_native | 2 | 2/3 | 0.50/0.75 | 3 | 2 | 0.2500 | 2.00 / 2 |' in (
      markdown)


@pytest.mark.slow
def test_bad_inputs_fail_with_one_line(tmp_path):
  result = _run(f'--indexes={tmp_path}/none/*.gz', f'--out={tmp_path}/c')
  assert result.returncode == 1
  assert result.stderr.strip().endswith(': no files match')
  bad = tmp_path / 'x' / 'T.index.json'
  bad.parent.mkdir()
  bad.write_text('{"0": ["<b_1>"]}')
  result = _run(f'--indexes={bad}', f'--out={tmp_path}/c')
  assert result.returncode == 1
  assert result.stderr.strip() == (
      f"compare_sids: {bad}: item '0': token '<b_1>' at level 0 has level "
      "letter 'b', expected 'a'")
  assert not list(tmp_path.glob('c.*'))
