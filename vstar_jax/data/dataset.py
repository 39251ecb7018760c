"""Reader for LC-Rec-format datasets: `<name>.{inter,item,index,time}.json`.

- `<name>.inter.json`: {"<user>": [item, ...]} chronological item ids (ints).
- `<name>.item.json` (optional: Amazon Beauty has none): {"<item>": {"title",
  "description", "brand", "categories", ...}}. When present it is the catalogue
  and every item in a sequence needs an entry; when absent the catalogue is the
  items seen in inter.json and the index.
- `<name>.index.json` (optional, or an explicit `index_path`): SIDs, see
  `sid_index`. When given, every catalogue item needs one.
- `<name>.time.json` (optional, our extension written by the converters):
  {"<user>": [unix_seconds, ...]} parallel to inter.json.

Each file may be plain or gzipped (`.json.gz`). Everything is validated on
load; any problem raises `DataError` naming the file and the offending key.
"""
import dataclasses
import pathlib
import re
from typing import Any, Iterable

import numpy as np

from vstar_jax.data import files
from vstar_jax.errors import DataError
from vstar_jax.data import sid_index

TEXT_FIELDS = ('title', 'description', 'brand', 'categories')
_CANONICAL_INT = re.compile(r'0|[1-9][0-9]*')


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A validated dataset with internal 0-based user and item indices.

  Internal item index n is external id item_ids[n]; internal user index u is
  external id user_ids[u]. Ids are sorted numerically when they are all
  canonical non-negative integers, else as strings.
  """
  name: str
  item_ids: tuple[str, ...]            # [N]
  item_meta: tuple[dict[str, Any], ...]  # [N] TEXT_FIELDS are str, '' absent
  user_ids: tuple[str, ...]            # [U]
  sequences: tuple[np.ndarray, ...]    # [U] of [n_u] int32 item indices
  timestamps: tuple[np.ndarray, ...] | None  # [U] of [n_u] int64 unix s
  sids: np.ndarray | None              # [N, L] int32 codes
  codebook_sizes: tuple[int, ...] | None  # [L] max code + 1 per level
  paths: dict[str, str]                # 'inter', 'item', 'index', 'time'

  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  @property
  def num_levels(self) -> int:
    """SID length L; 0 when the dataset has no index."""
    return 0 if self.sids is None else int(self.sids.shape[1])

  @property
  def num_interactions(self) -> int:
    return sum(len(s) for s in self.sequences)


def _sort_ids(ids: Iterable[str]) -> list[str]:
  """Numeric order if every id is a canonical non-negative int, else string."""
  ids = list(ids)
  if all(_CANONICAL_INT.fullmatch(i) for i in ids):
    return sorted(ids, key=int)
  return sorted(ids)


def load_dataset(data_dir: files.PathLike, name: str, *,
                 index_path: files.PathLike | None = None,
                 require_items: bool = False) -> Dataset:
  """Loads and validates the dataset `name` from `data_dir`.

  Args:
    data_dir: folder holding `<name>.inter.json[.gz]` and optional siblings.
    name: dataset file stem, e.g. 'Scientific'.
    index_path: explicit SID index file; by default `<name>.index.json[.gz]`
      in data_dir is used if it exists.
    require_items: if True, a missing `<name>.item.json[.gz]` is an error
      (for consumers of item text such as the text encoder).

  Returns:
    The Dataset.

  Raises:
    DataError: missing or malformed input; the message names file and key.
  """
  data_dir = pathlib.Path(data_dir)
  inter_path = files.find_file(data_dir, f'{name}.inter.json')
  if inter_path is None:
    raise DataError(f'{data_dir / (name + ".inter.json")}: file not found '
                    '(nor .gz)')
  item_path = files.find_file(data_dir, f'{name}.item.json')
  if item_path is None and require_items:
    raise DataError(f'{data_dir / (name + ".item.json")}: file not found '
                    '(nor .gz) and require_items=True')
  time_path = files.find_file(data_dir, f'{name}.time.json')
  if index_path is None:
    index_path = files.find_file(data_dir, f'{name}.index.json')
  elif not pathlib.Path(index_path).is_file():
    raise DataError(f'{index_path}: index file not found')

  raw_inter = _read_sequences(inter_path)
  user_ids = _sort_ids(raw_inter)
  sids_by_item = (None if index_path is None
                  else sid_index.read_sid_index(index_path))

  if item_path is not None:
    raw_items = files.read_json_object(item_path)
    item_ids = _sort_ids(raw_items)
    item_meta = [_item_meta(item_path, i, raw_items[i]) for i in item_ids]
  else:
    seen = {str(i) for seq in raw_inter.values() for i in seq}
    seen.update(sids_by_item or ())
    item_ids = _sort_ids(seen)
    item_meta = [{f: '' for f in TEXT_FIELDS} for _ in item_ids]
  item_index = {item: n for n, item in enumerate(item_ids)}

  sequences = []
  for user in user_ids:
    seq = raw_inter[user]
    for item in seq:
      if str(item) not in item_index:
        raise DataError(f'{inter_path}: user {user!r}: item {item} has no '
                        f'entry in {item_path}')
    sequences.append(np.asarray([item_index[str(i)] for i in seq], np.int32))

  timestamps = None
  if time_path is not None:
    timestamps = _read_timestamps(time_path, raw_inter, user_ids)

  sids = codebooks = None
  if sids_by_item is not None:
    sids = _sid_table(index_path, sids_by_item, item_ids, item_path)
    if sids.shape[0]:
      codebooks = sid_index.codebook_sizes(sids)

  paths = {'inter': str(inter_path)}
  for key, path in (('item', item_path), ('index', index_path),
                    ('time', time_path)):
    if path is not None:
      paths[key] = str(path)
  return Dataset(
      name=name,
      item_ids=tuple(item_ids),
      item_meta=tuple(item_meta),
      user_ids=tuple(user_ids),
      sequences=tuple(sequences),
      timestamps=timestamps,
      sids=sids,
      codebook_sizes=codebooks,
      paths=paths)


def _read_sequences(path: pathlib.Path) -> dict[str, list[int]]:
  raw = files.read_json_object(path)
  for user, seq in raw.items():
    _check_int_list(path, user, seq, what='sequence', min_value=0)
  return raw


def _check_int_list(path: pathlib.Path, user: str, seq: Any, *, what: str,
                    min_value: int | None = None) -> None:
  if not isinstance(seq, list):
    raise DataError(f'{path}: user {user!r}: {what} must be a list of ints, '
                    f'got {type(seq).__name__}')
  for pos, value in enumerate(seq):
    # bool is an int subclass, but true/false are not item ids or times.
    if not isinstance(value, int) or isinstance(value, bool):
      raise DataError(f'{path}: user {user!r}: {what} must be a list of ints, '
                      f'got {value!r} at position {pos}')
    if min_value is not None and value < min_value:
      raise DataError(f'{path}: user {user!r}: {what} must be a list of ints '
                      f'>= {min_value}, got {value} at position {pos}')


def _item_meta(path: pathlib.Path, item: str, meta: Any) -> dict[str, Any]:
  if not isinstance(meta, dict):
    raise DataError(f'{path}: item {item!r}: value must be an object, got '
                    f'{type(meta).__name__}')
  out = dict(meta)
  for field in TEXT_FIELDS:
    value = out.setdefault(field, '')
    if not isinstance(value, str):
      raise DataError(f'{path}: item {item!r}: field {field!r} must be a '
                      f'string, got {type(value).__name__}')
  return out


def _read_timestamps(path: pathlib.Path, raw_inter: dict[str, list[int]],
                     user_ids: list[str]) -> tuple[np.ndarray, ...]:
  raw = files.read_json_object(path)
  for user in raw:
    if user not in raw_inter:
      raise DataError(f'{path}: user {user!r} is not in inter.json')
  out = []
  for user in user_ids:
    if user not in raw:
      raise DataError(f'{path}: user {user!r} is missing (present in '
                      'inter.json)')
    times = raw[user]
    _check_int_list(path, user, times, what='timestamps')
    if len(times) != len(raw_inter[user]):
      raise DataError(f'{path}: user {user!r}: {len(times)} timestamps for '
                      f'{len(raw_inter[user])} items in inter.json')
    times = np.asarray(times, np.int64)
    if times.size and np.any(np.diff(times) < 0):
      pos = int(np.argmax(np.diff(times) < 0)) + 1
      raise DataError(f'{path}: user {user!r}: timestamps decrease at '
                      f'position {pos}; sequences must be chronological')
    out.append(times)
  return tuple(out)


def _sid_table(index_path: files.PathLike,
               sids_by_item: dict[str, tuple[int, ...]], item_ids: list[str],
               item_path: pathlib.Path | None) -> np.ndarray:
  """[N, L] int32 codes in item order; every item needs exactly one SID."""
  known = set(item_ids)
  for item in sids_by_item:
    if item not in known:
      raise DataError(f'{index_path}: item {item!r} is not in the catalogue '
                      f'({item_path})')
  for item in item_ids:
    if item not in sids_by_item:
      raise DataError(f'{index_path}: item {item!r} has no SID')
  num_levels = len(next(iter(sids_by_item.values()))) if sids_by_item else 0
  table = np.zeros((len(item_ids), num_levels), np.int32)
  for n, item in enumerate(item_ids):
    table[n] = sids_by_item[item]
  return table
