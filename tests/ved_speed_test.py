"""launch.ved_speed: the beam-vs-VED timing table it prints and writes."""
import json
import os
import subprocess
import sys

import pytest

from vstar_jax.data import files


def _ved_speed(repo_root, *args):
  return subprocess.run(
      [sys.executable, '-m', 'launch.ved_speed', *args], cwd=repo_root,
      env=dict(os.environ), capture_output=True, text=True, timeout=600,
      check=False)


@pytest.mark.slow
def test_random_init_size_writes_rows_and_bad_out_is_one_line(
    tmp_path, repo_root, smoke_dict):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  files.write_json(str(workdir / 'config.json'), smoke_dict().to_dict())
  common = [f'--workdir={workdir}', '--model_size=tiny',
            '--beam_widths=6', '--num_candidates=4', '--batch_size=4',
            '--num_batches=1', '--repeats=1']
  bad = _ved_speed(repo_root, *common, f'--out={tmp_path}/no/such/x')
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [
      f'ved_speed: --out={tmp_path}/no/such/x: its folder does not exist']
  out = _ved_speed(repo_root, *common, f'--out={tmp_path}/speed')
  assert out.returncode == 0, out.stderr
  result = json.loads((tmp_path / 'speed.json').read_text())
  assert result['model_size'].startswith('tiny (width 32, 1 layers')
  rows = {(r['budget'], r['method']): r for r in result['rows']}
  # The budget of beam width 6 on the smoke trie (L = 3): 13 tokens, 4 past
  # the superset VED's init (a width-4 beam, 9 tokens), so it explores.
  assert set(rows) == {(13, m)
                       for m in ('beam', 'superset tree', 'superset walk')}
  for (budget, method), r in rows.items():
    assert r['wall_ms'] > 0 and r['cpu_ms'] > 0
    if method == 'beam':
      assert r['wall_x_beam'] == r['cpu_x_beam'] == 1.0
  table = (tmp_path / 'speed.md').read_text()
  assert table.count('\n| 13 |') == 3 and 'superset tree' in table
