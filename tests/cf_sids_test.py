"""SIDs built in a run from a CF model it trains first (config.sid.inputs
'cf' / 'text+cf', vstar_jax/train/cf_model.py), and SID reuse by init_from."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from launch import runtime
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.data import sid_index
from vstar_jax.sid import build
from vstar_jax.train import cf_model
from vstar_jax.train import loop

# A toy SASRec for the CF model; its data fields are replaced by the run's.
_CF_CONFIG = '''
from launch.configs import smoke

def get_config(kind='sasrec'):
  config = smoke.get_config()
  config.model.kind = kind
  config.seed = 123                   # replaced by the run's sid.seed
  return config
'''
_SID_FIELDS = {'data.index': '', 'sid.num_levels': 2, 'sid.codebook_size': 8,
               'sid.num_iters': 3}


@pytest.fixture(name='toy_without_index')
def _toy_without_index(repo_root, tmp_path):
  """The smoke config's toy data without its SID index (SIDs get built)."""
  data = tmp_path / 'toy'
  data.mkdir()
  for name in ('inter', 'item', 'time'):
    shutil.copy(repo_root / 'testdata' / 'synthetic' / f'toy.{name}.json',
                data)
  return {**_SID_FIELDS, 'data.dir': str(data)}


@pytest.fixture(name='cf_file')
def _cf_file(tmp_path):
  path = tmp_path / 'cf.py'
  path.write_text(_CF_CONFIG)
  return str(path)


def test_cf_inputs_need_a_cf_model_config(smoke_config, cf_file):
  with pytest.raises(errors.ConfigError,
                     match=r"^config.sid.inputs='text\+cf' reads the item "
                           r'table of a CF model: set config.sid.cf_model'):
    smoke_config(**{'sid.inputs': 'text+cf'})
  with pytest.raises(errors.ConfigError,
                     match=r"^config.sid.cf_model='cf.txt': expected ''"):
    smoke_config(**{'sid.inputs': 'cf', 'sid.cf_model': 'cf.txt'})
  with pytest.raises(errors.ConfigError, match=r"config.sid.inputs='txt'"):
    smoke_config(**{'sid.inputs': 'txt'})
  config = smoke_config(**{'sid.inputs': 'cf', 'sid.cf_model': cf_file})
  assert not cf_model.required(config)          # data.index is set
  assert cf_model.required(smoke_config(**_SID_FIELDS, **{
      'sid.inputs': 'cf', 'sid.cf_model': cf_file}))
  assert not cf_model.required(smoke_config(**_SID_FIELDS, **{
      'sid.inputs': 'cf', 'sid.cf_model': cf_file,
      'init_from': '/elsewhere'}))               # the init run's SIDs


def test_cf_config_runs_on_the_run_data_seeded_by_the_sid_seed(
    smoke_config, cf_file):
  run = smoke_config(**_SID_FIELDS, **{
      'sid.inputs': 'cf', 'sid.cf_model': cf_file, 'sid.seed': 7,
      'data.fresh_windows': 1, 'data.dir': '/data/x', 'data.name': 'x'})
  cf = cf_model.on_run_data(runtime.load_config_file(cf_file), run)
  assert (cf.seed, cf.stages, cf.init_from) == (7, 'sft', '')
  assert (cf.data.dir, cf.data.name, cf.data.index, cf.data.fresh_windows) == (
      '/data/x', 'x', None, 1)
  assert cf.model.kind == 'sasrec'
  with pytest.raises(errors.ConfigError,
                     match=r"cf_model=.*: model.kind 'sid', expected an ID "
                           r'model \(sasrec\)$'):
    cf_model.on_run_data(runtime.load_config_file(f'{cf_file}:sid'), run)
  with pytest.raises(errors.ConfigError, match=r'^nope.py: config file not'):
    runtime.load_config_file('nope.py')


@pytest.mark.slow
def test_run_trains_cf_model_builds_sids_from_its_table_and_rl_reuses_them(
    smoke_config, cf_file, toy_without_index, tmp_path):
  config = smoke_config(**toy_without_index, **{
      'sid.inputs': 'cf', 'sid.cf_model': cf_file, 'sid.seed': 3})
  cf = cf_model.on_run_data(runtime.load_config_file(cf_file), config)
  workdir = str(tmp_path / 'run')
  # What launch/train.py does; a second call finds the table and returns.
  assert cf_model.ensure_item_embeddings(config, cf, workdir) is None
  table_path = experiment.cf_embeddings_path(workdir)
  table = np.load(table_path)
  mtime = os.path.getmtime(table_path)
  assert cf_model.ensure_item_embeddings(config, cf, workdir) is None
  assert os.path.getmtime(table_path) == mtime
  # The table is the CF run's best SASRec item embeddings, seeded by sid.seed.
  cf_dir = os.path.join(workdir, cf_model.CF_DIR)
  np.testing.assert_array_equal(
      table, cf_model.trained_item_table(cf, cf_dir))
  cf_results = json.loads(open(os.path.join(cf_dir, 'results.json')).read())
  assert cf_results['config']['seed'] == 3
  assert cf_results['config']['model']['kind'] == 'sasrec'

  results = loop.train_and_evaluate(config, workdir)
  index = experiment.built_index_path(workdir, 'toy')
  assert results['dataset']['sid_source'] == index
  codes, _ = build.build_sids(jax.random.key(3), table, build.SidBuildConfig(
      num_levels=2, codebook_size=8, num_iters=3))
  exp = experiment.load_experiment(config, workdir)
  by_item = sid_index.read_sid_index(index)
  got = np.asarray([by_item[i] for i in exp.dataset.item_ids])
  np.testing.assert_array_equal(got, codes)
  stats = json.loads(open(os.path.join(workdir, 'sids', 'sid_stats.json'))
                     .read())
  assert stats['inputs'] == 'cf'

  # RL from the run reads the run's SIDs: no CF model, no SIDs of its own.
  rl = smoke_config(**toy_without_index, **{
      'sid.inputs': 'cf', 'sid.cf_model': cf_file, 'stages': 'rl',
      'init_from': workdir})
  rl_exp = experiment.load_experiment(rl, str(tmp_path / 'rl'))
  assert rl_exp.sid_source == index
  np.testing.assert_array_equal(rl_exp.codes, codes)
  assert not (tmp_path / 'rl').exists()
  with pytest.raises(errors.ConfigError,
                     match=r'sids/toy.index.json.gz: not found; config.'
                           r"init_from=.* did not build its SIDs"):
    experiment.load_experiment(
        smoke_config(**toy_without_index, **{'init_from': str(tmp_path)}))


def test_bad_cf_model_is_one_line_exit_1_nothing_written(
    repo_root, cf_file, tmp_path):
  workdir = tmp_path / 'w'
  for spec, pattern in ((f'{cf_file}:sid', "model.kind 'sid', expected an "
                         'ID model'),
                        (str(tmp_path / 'no.py'), 'no.py: config file not '
                         'found')):
    result = subprocess.run(
        [sys.executable, '-m', 'launch.train',
         '--config=launch/configs/smoke.py', f'--workdir={workdir}',
         '--config.data.index=', '--config.sid.inputs=cf',
         f'--config.sid.cf_model={spec}'],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS='cpu'), check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [l for l in result.stderr.splitlines()
             if l.startswith('train: error:')]
    assert len(lines) == 1 and pattern in lines[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
  assert not workdir.exists()


def test_text_plus_cf_sids_read_both_tables_normalised(
    smoke_config, cf_file, toy_without_index, tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  text = rng.normal(size=(40, 6)).astype(np.float32)
  monkeypatch.setattr(build, 'dataset_embeddings', lambda ds, **_: text)
  config = smoke_config(**toy_without_index, **{
      'sid.inputs': 'text+cf', 'sid.cf_model': cf_file})
  workdir = str(tmp_path / 'run')
  with pytest.raises(errors.ConfigError,
                     match=r'cf_item_embeddings.npy: not found; config.sid.'
                           r"inputs='text\+cf' reads the item table"):
    experiment.load_experiment(config, workdir)
  path = experiment.cf_embeddings_path(workdir)
  os.makedirs(os.path.dirname(path))
  np.save(path, rng.normal(size=(39, 4)).astype(np.float32))
  with pytest.raises(errors.DataError,
                     match=r'cf_item_embeddings.npy: 39 rows for 40 '
                           r'catalogue items$'):
    experiment.load_experiment(config, workdir)
  cf = 5 * rng.normal(size=(40, 4)).astype(np.float32)
  np.save(path, cf)
  exp = experiment.load_experiment(config, workdir)
  want, _ = build.build_sids(
      jax.random.key(0), build.concat_normalized({'t': text, 'c': cf}),
      build.SidBuildConfig(num_levels=2, codebook_size=8, num_iters=3))
  np.testing.assert_array_equal(exp.codes, want)
