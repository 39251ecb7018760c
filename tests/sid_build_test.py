"""Tests of vstar_jax.sid.build (the in-process SID build)."""
import json

import jax
import numpy as np
import pytest

from vstar_jax.data import dataset as dataset_lib
from vstar_jax.sid import build
from vstar_jax.sid import errors
from vstar_jax.text import item_text

_CONFIG = build.SidBuildConfig(num_levels=2, codebook_size=8, num_iters=3)


def _embeddings(num_items=40, dim=6, seed=0):
  return np.random.default_rng(seed).normal(
      size=(num_items, dim)).astype(np.float32)


def test_reassign_gives_unique_sids_of_length_l_deterministically():
  embeddings = _embeddings()
  codes, stats = build.build_sids(jax.random.key(3), embeddings, _CONFIG)
  again, _ = build.build_sids(jax.random.key(3), embeddings, _CONFIG)
  np.testing.assert_array_equal(codes, again)
  assert codes.shape == (40, 2) and codes.dtype == np.int32
  assert np.unique(codes, axis=0).shape[0] == 40
  assert codes.max() < 8
  # Balanced: at most 5 items per level-0 code, so re-assignment fits.
  before = stats['before_resolution']
  assert before['colliding_items'] > 0
  assert stats['after_resolution']['colliding_items'] == 0
  assert stats['collisions']['num_moved'] == 40 - before['unique_sids']
  assert stats['config'] == {'num_levels': 2, 'codebook_size': 8,
                             'num_iters': 3, 'balanced': True,
                             'collisions': 'reassign'}
  assert (stats['num_items'], stats['embedding_dim']) == (40, 6)
  assert len(stats['kmeans']['levels']) == 2
  assert stats['trie']['num_prefixes'][0] == 1
  assert set(stats['timings_s']) == {'kmeans', 'collisions', 'trie', 'stats'}
  json.dumps(stats)  # JSON-ready


def test_extra_level_appends_the_rank_in_the_collision_group():
  config = build.SidBuildConfig(num_levels=2, codebook_size=4, num_iters=3,
                                balanced=False, collisions='extra_level')
  codes, stats = build.build_sids(jax.random.key(3), _embeddings(), config)
  assert codes.shape == (40, 3)
  assert np.unique(codes, axis=0).shape[0] == 40
  # 40 items in 16 SIDs collide: the extra level ranks them.
  before = stats['before_resolution']
  assert before['colliding_items'] > 0
  assert stats['after_resolution']['depths'][2]['num_prefixes'] == (
      before['unique_sids'])
  assert stats['after_resolution']['levels'][2]['codebook_size'] == (
      stats['collisions']['extra_level_vocab_size'])


@pytest.mark.parametrize('kwargs, match', [
    ({'num_levels': 0}, r'^num_levels=0: need an int in \[1, 26\]$'),
    ({'num_levels': 26, 'collisions': 'extra_level'}, r'\[1, 25\]'),
    ({'codebook_size': 1}, r'^codebook_size=1'),
    ({'num_iters': -1}, r'^num_iters=-1'),
    ({'num_levels': True}, r'^num_levels=True'),
    ({'collisions': 'magic'}, r"^collisions='magic': need one of"),
])
def test_bad_config_raises_one_line(kwargs, match):
  with pytest.raises(errors.SidError, match=match):
    build.SidBuildConfig(**kwargs)


def test_bad_embeddings_and_impossible_reassignment():
  with pytest.raises(errors.EmbeddingsError, match='non-finite'):
    build.build_sids(jax.random.key(0),
                     np.array([[0., np.nan]], np.float32), _CONFIG)
  with pytest.raises(errors.CollisionError, match='40 items share'):
    build.build_sids(jax.random.key(0), _embeddings(), build.SidBuildConfig(
        num_levels=1, codebook_size=4, num_iters=1, balanced=False))


def _dataset(tmp_path, items):
  (tmp_path / 'ds.inter.json').write_text(
      json.dumps({'0': [int(i) for i in items]}))
  (tmp_path / 'ds.item.json').write_text(json.dumps(items))
  return dataset_lib.load_dataset(tmp_path, 'ds')


def test_dataset_embeddings_input_errors_name_the_file(tmp_path):
  ds = _dataset(tmp_path, {'0': {'title': 'A.'}, '1': {'brand': 'B'}})
  with pytest.raises(item_text.ItemTextError) as info:
    build.dataset_embeddings(
        ds, text_config=item_text.ItemTextConfig(fields=('title',)))
  assert str(info.value) == (
      f"{tmp_path / 'ds.item.json'}: item '1': fields ('title',) are all "
      'empty')
  assert isinstance(info.value, errors.DataError)
  (tmp_path / 'ds.item.json').unlink()
  no_text = dataset_lib.load_dataset(tmp_path, 'ds')
  with pytest.raises(errors.SidError, match='no ds.item.json'):
    build.dataset_embeddings(no_text)
