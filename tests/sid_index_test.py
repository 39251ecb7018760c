"""Tests for vstar_jax.data.sid_index (SID index parsing and writing)."""
import gzip
import json

import numpy as np
import pytest

from vstar_jax import errors
from vstar_jax.data import sid_index


def test_format_and_parse_are_inverse():
  assert sid_index.format_sid([12, 200, 7, 0]) == [
      '<a_12>', '<b_200>', '<c_7>', '<d_0>']
  assert sid_index.parse_sid(['<a_12>', '<b_200>', '<c_7>'], source='f',
                             item='3') == (12, 200, 7)


@pytest.mark.parametrize('suffix', ['.json', '.json.gz'])
def test_write_then_read_roundtrip(tmp_path, suffix):
  codes = np.array([[3, 0, 255], [0, 17, 1], [3, 0, 255]], np.int64)
  path = tmp_path / f'X.index{suffix}'
  sid_index.write_sid_index(path, codes, ['10', '2', 'abc'])
  raw = (gzip.decompress(path.read_bytes()) if suffix.endswith('.gz')
         else path.read_bytes())
  assert json.loads(raw) == {'10': ['<a_3>', '<b_0>', '<c_255>'],
                             '2': ['<a_0>', '<b_17>', '<c_1>'],
                             'abc': ['<a_3>', '<b_0>', '<c_255>']}
  assert sid_index.read_sid_index(path) == {
      '10': (3, 0, 255), '2': (0, 17, 1), 'abc': (3, 0, 255)}
  assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp left


def test_write_overwrites_atomically(tmp_path):
  path = tmp_path / 'X.index.json'
  sid_index.write_sid_index(path, np.array([[1]]), ['0'])
  with pytest.raises(ValueError, match='2 item ids for 1 SIDs'):
    sid_index.write_sid_index(path, np.array([[5]]), ['0', '1'])
  assert sid_index.read_sid_index(path) == {'0': (1,)}


@pytest.mark.parametrize('codes,item_ids,fragment', [
    (np.zeros((2,), int), ['0', '1'], 'must be [N, L]'),
    (np.zeros((2, 0), int), ['0', '1'], 'must be [N, L]'),
    (np.zeros((2, 2)), ['0', '1'], 'must be integers'),
    (np.array([[0], [-1]]), ['0', '1'], 'must lie in'),
    (np.zeros((2, 1), int), ['0', '0'], 'distinct'),
])
def test_write_rejects_bad_tables(tmp_path, codes, item_ids, fragment):
  with pytest.raises(ValueError, match=fragment.replace('[', r'\[')):
    sid_index.write_sid_index(tmp_path / 'x.json', codes, item_ids)
  assert not list(tmp_path.iterdir())


def test_parse_index_errors_name_source_and_item():
  with pytest.raises(errors.DataError,
                     match=r"^idx.json: item 'b': SID has 1 levels but item "
                     r"'a' has 2"):
    sid_index.parse_sid_index({'a': ['<a_0>', '<b_1>'], 'b': ['<a_2>']},
                              source='idx.json')
  with pytest.raises(errors.DataError, match='top-level value must be'):
    sid_index.parse_sid_index([['<a_0>']], source='idx.json')


def test_format_sid_index_and_sid_table():
  codes = np.array([[1, 0], [0, 3]], np.int32)
  index = sid_index.format_sid_index(codes, ['7', '2'])
  assert index == {'7': ['<a_1>', '<b_0>'], '2': ['<a_0>', '<b_3>']}
  table = sid_index.sid_table(sid_index.parse_sid_index(index, source='f'),
                              source='f')
  np.testing.assert_array_equal(table, codes)
  assert table.dtype == np.int32
  with pytest.raises(errors.DataError, match='^f: the index has no items$'):
    sid_index.sid_table({}, source='f')


def test_codebook_sizes():
  codes = np.array([[0, 1], [0, 1], [0, 1], [2, 0], [1, 5], [1, 5]])
  assert sid_index.codebook_sizes(codes) == (3, 6)
