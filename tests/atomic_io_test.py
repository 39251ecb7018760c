"""Tests of all-or-nothing file writes."""
import pytest

from vstar_jax.sid import atomic_io


def test_writes_all_files(tmp_path):
  atomic_io.write_files_atomically(
      {tmp_path / 'a.txt': b'A', tmp_path / 'sub' / 'b.txt': b'B'})
  assert (tmp_path / 'a.txt').read_bytes() == b'A'
  assert (tmp_path / 'sub' / 'b.txt').read_bytes() == b'B'


def test_failure_writes_nothing_and_leaves_no_temp_files(tmp_path):
  (tmp_path / 'a.txt').write_bytes(b'old')
  (tmp_path / 'blocker').write_bytes(b'')  # a file where a folder must go
  with pytest.raises(OSError):
    atomic_io.write_files_atomically(
        {tmp_path / 'a.txt': b'new', tmp_path / 'blocker' / 'b.txt': b'B'})
  assert (tmp_path / 'a.txt').read_bytes() == b'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.txt', 'blocker']
