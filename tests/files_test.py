"""Tests of vstar_jax.data.files: JSON encoding and all-or-nothing writes."""
import gzip
import json

import numpy as np
import pytest

from vstar_jax.data import files


def test_write_files_writes_all_and_creates_folders(tmp_path):
  files.write_files(
      {tmp_path / 'a.txt': b'A', tmp_path / 'sub' / 'b.txt': b'B'})
  assert (tmp_path / 'a.txt').read_bytes() == b'A'
  assert (tmp_path / 'sub' / 'b.txt').read_bytes() == b'B'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'sub']


def test_failure_writes_nothing_and_leaves_no_temp_files(tmp_path):
  (tmp_path / 'a.txt').write_bytes(b'old')
  (tmp_path / 'blocker').write_bytes(b'')  # a file where a folder must go
  with pytest.raises(OSError):
    files.write_files(
        {tmp_path / 'a.txt': b'new', tmp_path / 'blocker' / 'b.txt': b'B'})
  assert (tmp_path / 'a.txt').read_bytes() == b'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'blocker']


def test_encode_json_compact_pretty_and_reproducible_gzip():
  obj = {'b': [1, 2], 'a': 'é'}
  assert files.encode_json(obj) == '{"b": [1, 2], "a": "é"}'.encode()
  assert files.encode_json(obj, indent=1).decode() == (
      '{\n "b": [\n  1,\n  2\n ],\n "a": "é"\n}\n')
  packed = files.encode_json(obj, gz=True)
  assert packed == files.encode_json(obj, gz=True)  # mtime 0
  assert json.loads(gzip.decompress(packed)) == obj


def test_write_json_files_round_trip(tmp_path):
  files.write_json_files({tmp_path / 'x.json': [1], tmp_path / 'y.json.gz':
                          {'k': 'v'}})
  assert files.read_json(tmp_path / 'x.json') == [1]
  assert files.read_json_object(tmp_path / 'y.json.gz') == {'k': 'v'}


def test_encode_npy_round_trip(tmp_path):
  array = np.arange(6, dtype=np.float32).reshape(2, 3)
  files.write_files({tmp_path / 'a.npy': files.encode_npy(array)})
  loaded = np.load(tmp_path / 'a.npy', allow_pickle=False)
  assert loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded, array)
