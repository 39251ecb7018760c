"""WORKSPACE.md tables are built from results/ (and are fresh)."""
import json
import subprocess
import sys

from tests import conftest


def _result(ndcg10, device='cpu'):
  test = {'hr@1': 0.1, 'hr@3': 0.2, 'hr@5': 0.3, 'hr@10': 0.4,
          'ndcg@3': 0.15, 'ndcg@5': 0.2, 'ndcg@10': ndcg10}
  return {'metrics': {'sft': {'valid': test, 'test': test}},
          'eval': {'beam_width': 50}, 'timings': {'wall_s': 120.0},
          'device': device}


def _run(*args, cwd):
  return subprocess.run([sys.executable, '-m', 'launch.make_tables', *args],
                        cwd=cwd, capture_output=True, text=True, timeout=120,
                        env={'PYTHONPATH': str(conftest.REPO_ROOT)})


def test_table_mean_std_and_check(tmp_path):
  for seed, (v, device) in enumerate([(0.1, 'cpu'), (0.3, 'NVIDIA H200')]):
    d = tmp_path / 'results' / 'toyds' / 'sft'
    d.mkdir(parents=True, exist_ok=True)
    (d / f'seed{seed}.json').write_text(json.dumps(_result(v, device)))
  ws = tmp_path / 'WORKSPACE.md'
  ws.write_text('intro\n<!-- table:toyds -->\nold\n<!-- /table:toyds -->\n')
  assert _run('--check', cwd=tmp_path).returncode == 1
  out = _run(cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  text = ws.read_text()
  assert '| sft | sft | 2 | 50 |' in text
  assert '0.2000 ± 0.1000' in text          # ndcg@10 over the two seeds
  assert '| 2.0 (H200, 1), 2.0 (cpu, 1) |' in text   # wall time per device
  assert _run('--check', cwd=tmp_path).returncode == 0


def test_repository_tables_are_fresh():
  out = _run('--check', cwd=conftest.REPO_ROOT)
  assert out.returncode == 0, out.stderr
