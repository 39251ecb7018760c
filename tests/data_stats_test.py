"""Tests for the launch/data_stats binary (run as a subprocess)."""
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'launch.data_stats', *args],
                        cwd=REPO, capture_output=True, text=True, check=False,
                        timeout=60)


@pytest.mark.slow
def test_summary_of_toy_dataset():
  result = _run('--data_dir=testdata/synthetic', '--name=toy')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for expected in ('users: 30', 'items: 40', 'interactions: 225',
                   'sid_levels: 3', 'sid_codebook_sizes: 4/4/4',
                   'sid_colliding_items: 0',
                   'leave_one_out: train 135 valid 30 test 30 '
                   '(max_history 20)',
                   'chronological: train 156 valid 19 test 20 '
                   '(max_history 10)'):
    assert expected in lines, result.stdout


@pytest.mark.slow
def test_bad_file_gives_one_line_and_exit_1(tmp_path):
  (tmp_path / 'bad.inter.json').write_text('{"0": [1, 2, 3]')
  result = _run(f'--data_dir={tmp_path}', '--name=bad')
  assert result.returncode == 1
  assert result.stdout == ''
  assert result.stderr.count('\n') == 1, result.stderr
  assert result.stderr.startswith(
      f'data_stats: error: {tmp_path}/bad.inter.json: malformed JSON at '
      'line 1 column 16')
