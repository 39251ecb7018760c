"""Tests of the LC-Rec index reader and writer."""
import gzip
import json

import numpy as np
import pytest

from vstar_jax.sid import errors
from vstar_jax.sid import index_format


def test_round_trip_in_the_lc_rec_token_format(tmp_path):
  codes = np.array([[12, 200, 7], [0, 1, 255]], np.int32)
  path = tmp_path / 'X.index.json.gz'
  index_format.write_index(path, codes, ['17', '4'])
  with gzip.open(path, 'rt') as f:
    assert json.load(f) == {'17': ['<a_12>', '<b_200>', '<c_7>'],
                            '4': ['<a_0>', '<b_1>', '<c_255>']}
  item_ids, read = index_format.read_index(path)
  assert item_ids == ['17', '4']
  np.testing.assert_array_equal(read, codes)
  assert read.dtype == np.int32
  plain = tmp_path / 'X.index.json'
  index_format.write_index(plain, codes)
  assert index_format.read_index(plain)[0] == ['0', '1']
  assert index_format.encode_index(codes) == index_format.encode_index(codes)


@pytest.mark.parametrize('index, match', [
    ({'0': ['<a_1>', '<c_2>']}, r'item "0" token 1 is \'<c_2>\''),
    ({'0': ['<a_1>'], '1': ['<a_1>', '<b_1>']}, 'item "1" has 2 tokens'),
    ({'0': ['a_1']}, 'token 0'),
    ({'0': ['<a_-1>']}, 'token 0'),
    ({'0': []}, 'item "0": expected a non-empty list'),
    ([], 'non-empty JSON object'),
])
def test_malformed_index_names_file_and_item(tmp_path, index, match):
  path = tmp_path / 'bad.index.json'
  path.write_text(json.dumps(index))
  with pytest.raises(errors.IndexFormatError, match=match) as info:
    index_format.read_index(path)
  assert str(info.value).startswith(str(path))
  assert '\n' not in str(info.value)


def test_unreadable_file(tmp_path):
  path = tmp_path / 'bad.index.json.gz'
  path.write_bytes(b'not gzip')
  with pytest.raises(errors.IndexFormatError, match='cannot read JSON'):
    index_format.read_index(path)


def test_item_ids_must_match_codes():
  with pytest.raises(errors.IndexFormatError, match='need 2 distinct'):
    index_format.encode_index(np.zeros((2, 1), np.int32), ['a', 'a'])
