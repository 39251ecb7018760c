"""LC-Rec SID index files: {"<item_id>": ["<a_12>", "<b_200>", ...]}.

Level l is written with letter chr(ord('a') + l), so at most 26 levels.
Files ending in .gz are gzipped. A local reader/writer for the SID tools; the
data package has its own reader (to be merged).
"""
from collections.abc import Sequence
import gzip
import json
import os
import re

import numpy as np

from vstar_jax.sid import atomic_io
from vstar_jax.sid import errors

_LETTERS = 'abcdefghijklmnopqrstuvwxyz'
_TOKEN = re.compile(r'<([a-z])_(\d{1,9})>')


def sid_tokens(codes_row: Sequence[int]) -> list[str]:
  """[L] codes -> ['<a_12>', '<b_200>', ...]."""
  if len(codes_row) > len(_LETTERS):
    raise errors.IndexFormatError(
        f'{len(codes_row)} levels: the token format has {len(_LETTERS)} '
        'letters')
  return [f'<{_LETTERS[l]}_{int(c)}>' for l, c in enumerate(codes_row)]


def encode_index(codes: np.ndarray, item_ids: Sequence[str] | None = None,
                 *, gzipped: bool = True) -> bytes:
  """Serialises codes [N, L] as LC-Rec JSON (gzip with mtime 0: bytes are a
  function of the input). item_ids: N strings, default '0'..'N-1'."""
  if codes.ndim != 2:
    raise errors.IndexFormatError(f'codes must be [N, L], got {codes.shape}')
  if item_ids is None:
    item_ids = [str(i) for i in range(codes.shape[0])]
  if len(item_ids) != codes.shape[0] or len(set(item_ids)) != len(item_ids):
    raise errors.IndexFormatError(
        f'need {codes.shape[0]} distinct item ids, got {len(item_ids)} '
        f'({len(set(item_ids))} distinct)')
  index = {str(i): sid_tokens(row) for i, row in zip(item_ids, codes.tolist())}
  data = json.dumps(index).encode('utf-8')
  return gzip.compress(data, mtime=0) if gzipped else data


def write_index(path: str | os.PathLike, codes: np.ndarray,
                item_ids: Sequence[str] | None = None) -> None:
  """Atomically writes codes [N, L] to path (gzipped if it ends in .gz)."""
  atomic_io.write_files_atomically({path: encode_index(
      codes, item_ids, gzipped=str(path).endswith('.gz'))})


def parse_index(index: object, *, source: str,
                ) -> tuple[list[str], np.ndarray]:
  """Validates a decoded index mapping.

  Args:
    index: the decoded JSON object.
    source: file name for error messages.

  Returns:
    item ids (file order) and codes [N, L] int32.

  Raises:
    IndexFormatError: naming the source, the item and the bad token.
  """
  if not isinstance(index, dict) or not index:
    raise errors.IndexFormatError(
        f'{source}: expected a non-empty JSON object of item -> tokens')
  num_levels = None
  codes = []
  for item, tokens in index.items():
    if not isinstance(tokens, list) or not tokens:
      raise errors.IndexFormatError(
          f'{source}: item "{item}": expected a non-empty list of tokens')
    if num_levels is None:
      num_levels = len(tokens)
    if len(tokens) != num_levels:
      raise errors.IndexFormatError(
          f'{source}: item "{item}" has {len(tokens)} tokens, the first item '
          f'has {num_levels}')
    row = []
    for level, token in enumerate(tokens):
      match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
      if match is None or match.group(1) != _LETTERS[level]:
        raise errors.IndexFormatError(
            f'{source}: item "{item}" token {level} is {token!r}, expected '
            f'"<{_LETTERS[level]}_N>"')
      row.append(int(match.group(2)))
    codes.append(row)
  return list(index), np.asarray(codes, np.int32)


def read_index(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
  """Reads an index file (.json or .json.gz): item ids and codes [N, L]."""
  opener = gzip.open if str(path).endswith('.gz') else open
  try:
    with opener(path, 'rt', encoding='utf-8') as f:
      index = json.load(f)
  except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise errors.IndexFormatError(
        f'{path}: cannot read JSON ({type(e).__name__}: {e})') from e
  return parse_index(index, source=str(path))
