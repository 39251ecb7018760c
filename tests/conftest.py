"""Test-wide JAX setup. Runs before any test module imports jax.

Eight fake CPU devices (so sharding tests see a real mesh), rank promotion as
an error (catches silent broadcasting bugs) and partitionable threefry (the
same random streams as launch/ binaries).
"""
import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault(
    'XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_threefry_partitionable', True)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'


def pytest_configure(config):
  # Idempotent: registering a marker twice is harmless.
  config.addinivalue_line(
      'markers', 'slow: spawns launch.* binaries or trains end to end')


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


def random_catalogue(rng: np.random.Generator, vocab_size: int,
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


def smoke_dict(**overrides):
  """launch/configs/smoke.py's ConfigDict with absolute data paths and
  `overrides` ({'sft.batch_size': 8, ...})."""
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
