"""End-to-end tests of launch/build_sids.py (subprocess, tiny shapes)."""
import gzip
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from vstar_jax.sid import index_format

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'launch.build_sids', *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=120, check=False)


def _error_lines(stderr):
  assert 'Traceback' not in stderr
  return [l for l in stderr.splitlines() if l.startswith('build_sids:')]


@pytest.fixture(name='embeddings_path')
def _embeddings_path(tmp_path):
  path = tmp_path / 'emb.npy'
  np.save(path, np.random.default_rng(0).normal(size=(64, 8)).astype(
      np.float32))
  return path


@pytest.mark.parametrize('method, extra', [
    ('reassign', ['--balanced']), ('extra_level', [])])
def test_writes_index_embeddings_and_stats(tmp_path, embeddings_path,
                                           method, extra):
  out = tmp_path / 'out'
  result = _run('--dataset=Tiny', f'--out_dir={out}',
                f'--embeddings={embeddings_path}', '--num_levels=2',
                '--codebook_size=8', '--num_iters=3',
                f'--collisions={method}', *extra)
  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in out.iterdir()) == [
      'Tiny.index.json.gz', 'embeddings.npy', 'sid_stats.json']
  with gzip.open(out / 'Tiny.index.json.gz', 'rt') as f:
    raw = json.load(f)
  assert list(raw) == [str(i) for i in range(64)]
  assert raw['0'][0].startswith('<a_') and raw['0'][1].startswith('<b_')
  _, codes = index_format.read_index(out / 'Tiny.index.json.gz')
  num_levels = 2 if method == 'reassign' else 3
  assert codes.shape == (64, num_levels)
  assert np.unique(codes, axis=0).shape[0] == 64
  np.testing.assert_array_equal(np.load(out / 'embeddings.npy'),
                                np.load(embeddings_path))
  stats = json.loads((out / 'sid_stats.json').read_text())
  assert stats['config']['collisions'] == method
  assert stats['num_items'] == 64 and stats['embedding_dim'] == 8
  assert stats['after_resolution']['unique_sids'] == 64
  before = stats['before_resolution']
  assert before['colliding_items'] == stats['collisions']['before'][
      'colliding_items'] > 0  # 64 items in 8 x 8 SIDs must collide
  assert len(before['levels']) == 2
  assert all(0 < l['usage'] <= 1 for l in before['levels'])
  assert stats['trie']['num_prefixes'][0] == 1
  assert set(stats['timings_s']) == {'load', 'kmeans', 'collisions', 'trie',
                                     'stats'}


@pytest.mark.parametrize('array, match', [
    (np.zeros((4,), np.float32), r'emb.npy: expected a non-empty \[N, D\]'),
    (np.array([[0., np.inf]], np.float32), 'emb.npy: row 0 has non-finite'),
])
def test_bad_input_is_one_line_exit_1_no_output(tmp_path, array, match):
  path = tmp_path / 'emb.npy'
  np.save(path, array)
  out = tmp_path / 'out'
  result = _run('--dataset=Tiny', f'--out_dir={out}', f'--embeddings={path}',
                '--num_levels=2', '--codebook_size=2', '--num_iters=1')
  assert result.returncode == 1
  lines = _error_lines(result.stderr)
  assert len(lines) == 1
  assert re.search(match, lines[0]), lines[0]
  assert not out.exists()


def test_impossible_reassignment_and_unwired_encoder_fail_cleanly(
    tmp_path, embeddings_path):
  out = tmp_path / 'out'
  result = _run('--dataset=Tiny', f'--out_dir={out}',
                f'--embeddings={embeddings_path}', '--num_levels=1',
                '--codebook_size=4', '--num_iters=1')
  assert result.returncode == 1
  assert _error_lines(result.stderr) == [
      'build_sids: reassign: 64 items share the prefix [] but the last level'
      ' has only 4 codes; use the extra_level method']
  result = _run('--dataset=Tiny', f'--out_dir={out}')
  assert result.returncode == 1
  assert 'not yet wired' in _error_lines(result.stderr)[0]
  assert not out.exists()
