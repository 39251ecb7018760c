"""SID index files: `{"<item>": ["<a_12>", "<b_200>", "<c_7>"]}`.

Token l (0-based) of every SID is `<x_N>` where x is the l-th lower-case
letter and N a non-negative decimal code without leading zeros. This is the
LC-Rec / LETTER format of the indexes in ../shared/data, and the SID tokenizer
writes its indexes with `write_sid_index`. This is the project's only
reader and writer of the format.
"""
import re
import string
from typing import Any, Sequence

import numpy as np

from vstar_jax import errors
from vstar_jax.data import files

LEVEL_LETTERS = string.ascii_lowercase
MAX_CODE = np.iinfo(np.int32).max
_TOKEN = re.compile(r'<([a-z])_(0|[1-9][0-9]*)>')


def format_sid(codes: Sequence[int]) -> list[str]:
  """Token strings of one SID. codes: [L] non-negative ints, L <= 26."""
  if len(codes) > len(LEVEL_LETTERS):
    raise ValueError(f'SID has {len(codes)} levels; at most '
                     f'{len(LEVEL_LETTERS)} are supported')
  return [f'<{LEVEL_LETTERS[l]}_{int(c)}>' for l, c in enumerate(codes)]


def parse_sid(tokens: Any, *, source: files.PathLike,
              item: str) -> tuple[int, ...]:
  """Parses one item's SID tokens into codes; errors name source and item."""
  if not isinstance(tokens, list) or not tokens:
    raise _item_error(source, item, 'SID must be a non-empty list of tokens, '
                     f'got {_describe(tokens)}')
  if len(tokens) > len(LEVEL_LETTERS):
    raise _item_error(source, item, f'SID has {len(tokens)} levels; at most '
                     f'{len(LEVEL_LETTERS)} are supported')
  codes = []
  for level, token in enumerate(tokens):
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
      raise _item_error(source, item, f'token {token!r} at level {level} does '
                       f'not parse as <{LEVEL_LETTERS[level]}_N>')
    if match.group(1) != LEVEL_LETTERS[level]:
      raise _item_error(source, item, f'token {token!r} at level {level} has '
                       f'level letter {match.group(1)!r}, expected '
                       f'{LEVEL_LETTERS[level]!r}')
    code = int(match.group(2))
    if code > MAX_CODE:
      raise _item_error(source, item, f'token {token!r}: code exceeds int32')
    codes.append(code)
  return tuple(codes)


def parse_sid_index(raw: Any, *,
                    source: files.PathLike) -> dict[str, tuple[int, ...]]:
  """Validates a decoded index object; returns item id -> SID codes.

  Duplicate SIDs are allowed here (native tokenizer outputs collide); use
  `sid_collisions` to measure them.

  Args:
    raw: the decoded JSON value of an index file.
    source: file named in error messages.

  Returns:
    Item id (as in the file) -> codes, all of one length L.
  """
  if not isinstance(raw, dict):
    raise errors.DataError(f'{source}: top-level value must be a JSON object, '
                          f'got {type(raw).__name__}')
  parsed = {}
  first_item = None
  for item, tokens in raw.items():
    codes = parse_sid(tokens, source=source, item=item)
    if first_item is None:
      first_item = item
    elif len(codes) != len(parsed[first_item]):
      raise _item_error(source, item, f'SID has {len(codes)} levels but item '
                       f'{first_item!r} has {len(parsed[first_item])}; all '
                       'SIDs must have the same length')
    parsed[item] = codes
  return parsed


def read_sid_index(path: files.PathLike) -> dict[str, tuple[int, ...]]:
  """Reads and validates an index file (gz or plain)."""
  return parse_sid_index(files.read_json(path), source=path)


def format_sid_index(codes: np.ndarray,
                     item_ids: Sequence[str]) -> dict[str, list[str]]:
  """The index object of a code table, ready for JSON.

  Args:
    codes: [N, L] non-negative integer codes, row n is the SID of item_ids[n].
    item_ids: [N] distinct external item ids (strings).

  Returns:
    {item_id: ['<a_..>', '<b_..>', ...]} in item_ids order.
  """
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] == 0:
    raise ValueError(f'codes must be [N, L] with L >= 1, got {codes.shape}')
  if not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f'codes must be integers, got {codes.dtype}')
  if len(item_ids) != codes.shape[0]:
    raise ValueError(f'{len(item_ids)} item ids for {codes.shape[0]} SIDs')
  if len(set(item_ids)) != len(item_ids):
    raise ValueError('item ids must be distinct')
  if codes.size and (codes.min() < 0 or codes.max() > MAX_CODE):
    raise ValueError('codes must lie in [0, 2**31 - 1]')
  return {str(item): format_sid(row.tolist())
          for item, row in zip(item_ids, codes)}


def write_sid_index(path: files.PathLike, codes: np.ndarray,
                    item_ids: Sequence[str]) -> None:
  """Writes an index file atomically; gzipped when `path` ends in `.gz`.

  Args:
    path: output file.
    codes: [N, L] non-negative integer codes, row n is the SID of item_ids[n].
    item_ids: [N] distinct external item ids (strings).
  """
  files.write_json(path, format_sid_index(codes, item_ids))


def sid_table(sids_by_item: dict[str, tuple[int, ...]], *,
              source: files.PathLike) -> np.ndarray:
  """[N, L] int32 codes of a `read_sid_index` result, in its item order.

  Args:
    sids_by_item: item id -> codes, all of one length L.
    source: file named in the error when there are no items.
  """
  if not sids_by_item:
    raise errors.DataError(f'{source}: the index has no items')
  return np.asarray(list(sids_by_item.values()), np.int32)


def codebook_sizes(codes: np.ndarray) -> tuple[int, ...]:
  """Per-level number of codes (max code + 1) of an [N, L] code table, N > 0."""
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[0] == 0:
    raise ValueError(f'codes must be [N, L] with N > 0, got {codes.shape}')
  return tuple(int(m) + 1 for m in codes.max(axis=0))


def _item_error(source: files.PathLike, item: str,
                problem: str) -> errors.DataError:
  return errors.DataError(f'{source}: item {item!r}: {problem}')


def _describe(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + '...'
