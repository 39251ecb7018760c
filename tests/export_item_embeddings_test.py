"""launch/export_item_embeddings.py: a run's item table as .npy, in item
order, feeding launch/build_sids.py alone or concatenated with text."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from launch.configs import common
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.sid import build
from vstar_jax.train import evaluation
from vstar_jax.train import recommender


def _run(repo_root, module, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=repo_root,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def _error_line(result, name):
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith(f'{name}:')]
  assert len(lines) == 1, result.stderr[-2000:]
  return lines[0]


def test_item_table_of_each_model_kind():
  table = np.arange(6, dtype=np.float64).reshape(3, 2)
  np.testing.assert_array_equal(
      recommender.item_table('sasrec', {'item_embed': {'embedding': table}}),
      table)
  hybrid = recommender.item_table('sid', {'item_embed': table, 'bos': table[0]})
  assert hybrid.dtype == np.float32 and hybrid.shape == (3, 2)
  with pytest.raises(errors.ConfigError,
                     match="'sid' run without config.model.item_id_embedding"):
    recommender.item_table('sid', {'code_embed': table})


def test_concat_normalized_matches_numpy():
  rng = np.random.default_rng(0)
  text, cf = rng.normal(size=(5, 4)), 10 * rng.normal(size=(5, 3))
  got = build.concat_normalized({'text': text, 'cf': cf})
  unit = lambda x: x / np.sqrt((x ** 2).sum(1, keepdims=True))
  np.testing.assert_allclose(got, np.hstack([unit(text), unit(cf)]),
                             rtol=1e-6)
  assert got.dtype == np.float32
  np.testing.assert_allclose((got ** 2).sum(1), 2.0, rtol=1e-6)
  with pytest.raises(errors.DataError, match=r'^cf: 4 rows, but text has 5$'):
    build.concat_normalized({'text': text, 'cf': cf[:4]})
  cf[2] = 0.
  with pytest.raises(errors.DataError,
                     match=r'^cf: row 2 is all zeros, cannot L2-normalise'):
    build.concat_normalized({'text': text, 'cf': cf})


@pytest.mark.slow
def test_export_round_trips_and_build_sids_takes_the_concatenation(
    sasrec_toy_run, repo_root, tmp_path):
  out = tmp_path / 'cf.npy'
  result = _run(repo_root, 'launch.export_item_embeddings',
                f'--workdir={sasrec_toy_run}', f'--out={out}')
  assert result.returncode == 0, result.stderr[-2000:]
  # The best SFT parameters' table, row n = catalogue item n.
  config = evaluation.load_run_config(str(sasrec_toy_run),
                                      common.base_config())
  exp = experiment.load_experiment(config, str(sasrec_toy_run))
  params = evaluation.restore_params(
      config, recommender.from_config(config, exp), str(sasrec_toy_run),
      'sft')
  want = np.asarray(jax.device_get(params['item_embed']['embedding']))
  cf = np.load(out)
  assert cf.dtype == np.float32 and cf.shape == (exp.dataset.num_items,
                                                 config.model.width)
  np.testing.assert_array_equal(cf, want)
  # CF alone and text + CF both build SIDs of the toy catalogue.
  text = tmp_path / 'text.npy'
  np.save(text, np.random.default_rng(1).normal(size=(40, 8)).astype(
      np.float32))
  sid_args = [f'--data_dir={repo_root / "testdata/synthetic"}',
              '--dataset=toy', '--num_levels=2', '--codebook_size=8',
              '--num_iters=3']
  for name, emb in (('cf', f'{out}'), ('both', f'{text},{out}')):
    result = _run(repo_root, 'launch.build_sids', *sid_args,
                  f'--out_dir={tmp_path / name}', f'--embeddings={emb}')
    assert result.returncode == 0, result.stderr[-2000:]
    assert '40 items, 40 unique SIDs' in result.stdout
  both = np.load(tmp_path / 'both' / 'embeddings.npy')
  np.testing.assert_allclose(
      both, build.concat_normalized({'t': np.load(text), 'c': cf}))
  stats = json.loads((tmp_path / 'both' / 'sid_stats.json').read_text())
  assert stats['embeddings']['files'] == [str(text), str(out)]
  assert stats['embedding_dim'] == 8 + config.model.width


@pytest.mark.slow
def test_bad_input_is_one_line_exit_1_nothing_written(
    sasrec_toy_run, repo_root, tmp_path):
  cases = {
      (f'--workdir={tmp_path}', f'--out={tmp_path / "x.npy"}'):
          r'config\.json: not found; is .* a launch\.train work directory\?$',
      (f'--workdir={sasrec_toy_run}', f'--out={tmp_path / "x.txt"}'):
          r'--out=.*x\.txt: expected a \.npy path$',
      (f'--workdir={sasrec_toy_run}', f'--out={tmp_path / "x.npy"}',
       '--stage=rl'): r"no best checkpoint for stage 'rl'$",
  }
  for args, pattern in cases.items():
    line = _error_line(_run(repo_root, 'launch.export_item_embeddings',
                            *args), 'export_item_embeddings')
    assert re.search(pattern, line), line
  assert list(tmp_path.iterdir()) == []
  emb = tmp_path / 'e.npy'
  np.save(emb, np.ones((40, 2), np.float32))
  line = _error_line(_run(
      repo_root, 'launch.build_sids',
      f'--data_dir={repo_root / "testdata/synthetic"}', '--dataset=toy',
      f'--out_dir={tmp_path / "o"}', f'--embeddings={emb},{emb}'),
                     'build_sids')
  assert line.endswith('expected one or more distinct .npy paths'), line
  assert not (tmp_path / 'o').exists()
