"""launch.plot_rl: curves from metrics.jsonl, averaged over seeds."""
import json
import subprocess
import sys

import pytest

from launch import plot_rl
from vstar_jax import errors


def _write_run(path, rewards):
  path.mkdir()
  lines = [json.dumps({'step': 10 * (i + 1), 'rl/reward': r, 'rl/kl': 0.})
           for i, r in enumerate(rewards)]
  lines.append(json.dumps({'step': 20, 'rl/valid_subset/ndcg@10': 0.05}))
  (path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  return path


def test_mean_over_seeds_on_common_steps(tmp_path):
  a = plot_rl.read_curves(_write_run(tmp_path / 'a', [1., 3., 5.]))
  b = plot_rl.read_curves(_write_run(tmp_path / 'b', [3., 5.]))
  curves = plot_rl.mean_curves([a, b])
  assert curves['rl/reward'] == ([10, 20], [2., 4.])
  assert curves['rl/valid_subset/ndcg@10'] == ([20], [0.05])
  assert 'rl/target_in_group' not in curves


def test_bad_line_names_file(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'metrics.jsonl').write_text('{"step": 1}\nnot json\n')
  with pytest.raises(errors.DataError, match=r'metrics.jsonl: line 2'):
    plot_rl.read_curves(run)


@pytest.mark.slow
def test_binary_writes_png(tmp_path):
  run = _write_run(tmp_path / 'run', [1., 2.])
  out = tmp_path / 'curves.png'
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.plot_rl', f'--runs=v={run},v={run}',
       f'--out={out}'], capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.plot_rl', f'--runs={run}',
       f'--out={tmp_path / "x.png"}'], capture_output=True, text=True,
      check=False)
  assert proc.returncode == 1
  assert 'expected NAME=WORKDIR' in proc.stderr
  assert not (tmp_path / 'x.png').exists()
