"""Test-wide JAX setup, the `slow` tier and the helpers shared by test files.

Runs before any test module imports jax: eight fake CPU devices (so sharding
tests see a real mesh), most XLA optimizations off (compiling dominates),
rank promotion as an error (catches silent broadcasting bugs) and
partitionable threefry (the same random streams as launch/ binaries).

Test files never import each other or this module: shared helpers reach them
as the fixtures below (pytest injects them by argument name).

Tiers: `@pytest.mark.slow` marks tests that run `python -m launch.*`, train
end to end, or take more than ~5 s on 2 idle CPU cores (compiling a whole
SFT/RL step or VED search, the real MiniLM encoder). `pytest tests` runs
everything (CI); `pytest tests -m "not slow"` is the edit-test loop.
"""
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable

import numpy as np
import pytest

os.environ.setdefault(
    'XLA_FLAGS', '--xla_force_host_platform_device_count=8')
# A persistent compilation cache for this session, fresh each time and
# shared with the `python -m launch.*` subprocesses (they inherit the
# environment): many tests compile the same programs (the smoke run's steps
# and searches, each run building new jitted closures), and compiling
# dominates the suite's time on CPU. A hit returns the executable XLA would
# have built again; traces (and trace-count checks) are unaffected.
# Under pytest-xdist the workers inherit the controller's cache (set before
# they are spawned), so the processes share compiled programs too; only the
# process that made the folder removes it.
_OWNS_XLA_CACHE = 'VSTAR_TEST_XLA_CACHE' not in os.environ
if _OWNS_XLA_CACHE:
  os.environ['VSTAR_TEST_XLA_CACHE'] = tempfile.mkdtemp(
      prefix='vstar_jax_tests_xla_cache_')
_XLA_CACHE = os.environ['VSTAR_TEST_XLA_CACHE']
os.environ['JAX_COMPILATION_CACHE_DIR'] = _XLA_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
# Most XLA optimizations off, in this process and the `launch.*` ones it
# starts: compiling, not running, dominates the tests' tiny programs (flax
# lm1b's train_test does the same). `JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest`
# tests the optimized programs; the Quickstart's main job runs them too.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_threefry_partitionable', True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'
# {test file: seconds}, from `pytest tests --write-module-seconds`.
MODULE_SECONDS = pathlib.Path(__file__).with_name('module_seconds.json')


def pytest_configure(config):
  # ml_collections loads --config files with importlib's load_module.
  config.addinivalue_line(
      'filterwarnings',
      r'ignore:the load_module\(\) method is deprecated:DeprecationWarning')
  config.addinivalue_line(
      'markers', 'slow: runs a launch.* binary, trains end to end or takes '
      'over ~5 s on 2 idle cores (deselect with -m "not slow")')


def pytest_unconfigure(config):
  del config
  if _OWNS_XLA_CACHE:
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)
    del os.environ['VSTAR_TEST_XLA_CACHE']


def pytest_collection_modifyitems(config, items):
  """A misspelt marker (e.g. `@pytest.mark.slwo`) is an error, not a test
  silently left in the fast tier (as --strict-markers, from here).

  Files then run longest first (by MODULE_SECONDS; unmeasured ones first of
  all): with `-n 2 --dist loadfile --no-loadscope-reorder` each xdist worker
  takes the next file when it runs dry, so the short files at the end even
  out the two workers' finishing times."""
  known = {line.split(':')[0].split('(')[0].strip()
           for line in config.getini('markers')}
  for item in items:
    for mark in item.iter_markers():
      if mark.name not in known:
        raise pytest.UsageError(
            f'{item.nodeid}: unknown marker {mark.name!r}; register it in '
            'pytest_configure in tests/conftest.py')
  seconds = json.loads(MODULE_SECONDS.read_text())
  items.sort(key=lambda item: -seconds.get(_module(item.nodeid), np.inf))


def _module(nodeid: str) -> str:
  """'tests/a_test.py::test_b[c]' -> 'a_test.py' (rootdir-independent)."""
  return nodeid.split('::')[0].rsplit('/', 1)[-1]


def pytest_addoption(parser):
  parser.addoption(
      '--write-module-seconds', action='store_true',
      help=f'write each test file\'s total seconds to {MODULE_SECONDS.name} '
      '(the order in which files run); run the whole suite with it')


_SECONDS_BY_MODULE: dict[str, float] = {}


def pytest_runtest_logreport(report):
  """Sums setup, call and teardown times per file (under xdist the
  controller receives every worker's reports)."""
  module = _module(report.nodeid)
  _SECONDS_BY_MODULE[module] = (_SECONDS_BY_MODULE.get(module, 0.) +
                                report.duration)


def pytest_sessionfinish(session):
  config = session.config
  if config.getoption('write_module_seconds') and not hasattr(
      config, 'workerinput'):   # the controller, or a run without xdist
    MODULE_SECONDS.write_text(json.dumps(
        {k: round(v, 1) for k, v in sorted(_SECONDS_BY_MODULE.items())},
        indent=1) + '\n')


@pytest.fixture(scope='session')
def repo_root() -> pathlib.Path:
  """The checkout's root: the working directory for `python -m launch.*`."""
  return REPO_ROOT


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """Path to ../shared/data; CI (VSTAR_REQUIRE_SHARED_DATA=1) requires it."""
  if SHARED_DATA.is_dir():
    return SHARED_DATA
  if os.environ.get('VSTAR_REQUIRE_SHARED_DATA') == '1':
    raise RuntimeError(
        f'{SHARED_DATA} is missing but VSTAR_REQUIRE_SHARED_DATA=1 (CI).')
  pytest.skip(f'../shared/data not found beside the checkout ({SHARED_DATA});'
              ' the Amazon datasets are read from there and never copied.')


def _random_catalogue(rng: np.random.Generator, vocab_size: int,
                      num_levels: int, draws: int):
  """A toy catalogue: the distinct SIDs among `draws` random code rows.

  Returns:
    sids [N, L] int32 (sorted, N <= draws) and their prefix trie.
  """
  # Imported here: this module must set XLA_FLAGS before anything imports jax.
  from vstar_jax.sid import trie as trie_lib  # pylint: disable=g-import-not-at-top
  rows = {tuple(int(c) for c in rng.integers(0, vocab_size, num_levels))
          for _ in range(draws)}
  sids = np.array(sorted(rows), np.int32)
  return sids, trie_lib.build_trie(sids, vocab_size=vocab_size)


@pytest.fixture(scope='session')
def random_catalogue() -> Callable[..., Any]:
  """`random_catalogue(rng, vocab_size, num_levels, draws) -> (sids, trie)`."""
  return _random_catalogue


def _smoke_dict(**overrides):
  """launch/configs/smoke.py as a ConfigDict, with repository-absolute data
  paths (tests run from any directory) and `overrides` applied.

  Args:
    **overrides: dotted field -> value, e.g. `**{'sft.num_steps': 2}`; a
      field may be new (unknown-field tests), it is set unchecked.
  """
  from launch.configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.data.dir = str(REPO_ROOT / config.data.dir)
  config.data.index = str(REPO_ROOT / config.data.index)
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *path, leaf = key.split('.')
      for p in path:
        node = node[p]
      node[leaf] = value
  return config


def _smoke_config(**overrides):
  """`_smoke_dict(**overrides)` parsed: a typed `config.RunConfig`."""
  from vstar_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.parse(_smoke_dict(**overrides))


@pytest.fixture(scope='session')
def smoke_dict() -> Callable[..., Any]:
  """`smoke_dict(**{'a.b': value}) -> ConfigDict` (see _smoke_dict)."""
  return _smoke_dict


@pytest.fixture(scope='session')
def smoke_config() -> Callable[..., Any]:
  """`smoke_config(**{'a.b': value}) -> RunConfig`, the smoke ConfigDict
  parsed (see _smoke_dict); raises errors.ConfigError on a bad value."""
  return _smoke_config


def _sft_losses(workdir) -> dict[tuple[int, str], float]:
  """{(step, name): value} of the sft/ training metrics in metrics.jsonl,
  without the timing ones (they differ between runs)."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {(r['step'], k): v for r in rows for k, v in r.items()
          if k.startswith('sft/') and not k.split('/')[-1].startswith(
              ('steps_per', 'examples_per', 'eta'))}


@pytest.fixture(scope='session')
def sft_losses() -> Callable[..., dict[tuple[int, str], float]]:
  """`sft_losses(workdir) -> {(step, name): value}` (see _sft_losses)."""
  return _sft_losses


@pytest.fixture(scope='session')
def sasrec_toy_run(tmp_path_factory) -> pathlib.Path:
  """The work directory of a trained toy SASRec run (the smoke config's
  data and 8 SFT steps, model.kind='sasrec')."""
  from vstar_jax.train import loop  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('sasrec_toy') / 'run'
  loop.train_and_evaluate(_smoke_config(**{'model.kind': 'sasrec'}),
                          str(workdir))
  return workdir
