"""Raw MovieLens / Amazon 2018 files -> LC-Rec-format dataset files.

Both converters return a `Converted` that `write_converted` stores as
`<name>.inter.json`, `<name>.item.json`, `<name>.time.json` (timestamps
parallel to inter.json) and `<name>.user2<orig key>.json` (internal user ->
original user id), gzipped by default.

MovieLens (reproduces ../shared/data/movielens_latest_small exactly):
  every rating is an interaction; iterative k-core; each user's items sorted by
  (timestamp, movieId); users numbered by ascending userId, items by first
  appearance in that order; title as in movies.csv, categories = genres joined
  with ', ' without '(no genres listed)'; meta keeps movieId. A repeated
  (userId, movieId) pair is an error (GroupLens files have one rating each).

Amazon 2018 (reviews JSON-lines + metadata JSON-lines, gz or plain):
  1. items without metadata, or whose title is empty after cleaning or looks
     like scraped HTML/JS (a script/style/span/div/a/img/table tag,
     `getTime(`, `var x =`, `function(`, or a brace), are dropped before the
     k-core, as LC-Rec drops items without usable titles; a repeated asin in
     the metadata keeps its first record;
  2. a repeated (reviewerID, asin) pair counts once, at its earliest
     unixReviewTime (LC-Rec's make_inters_in_order keeps the earliest too);
  3. iterative k-core on users and items;
  4. users numbered in order of their first surviving review line in the
     review file (LC-Rec), each user's items sorted by (unixReviewTime, asin),
     items numbered by first appearance in that order.
  Text cleaning: HTML unescape, tags removed, whitespace collapsed. Titles get
  a final '.' unless they already end in '.', '!' or '?' (LC-Rec appends '.';
  we do not double existing final punctuation). description: list entries
  cleaned and joined by ' '. categories: cleaned, empty entries dropped,
  joined by ', '. Meta keeps 'asin'.
"""
import collections
import csv
import dataclasses
import html
import io
import pathlib
import re
from typing import Any

import numpy as np

from vstar_jax.data import files
from vstar_jax.errors import DataError

_TAG = re.compile(r'<[^>]*>')
# Scraped pages leak script/markup into some 2018 titles.
_JUNK = re.compile(
    r'<\s*/?\s*(script|style|span|div|a|img|table)\b|getTime\s*\(|'
    r'\bvar\s+\w+\s*=|function\s*\(|[{}]', re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Converted:
  inter: dict[str, list[int]]           # user -> chronological item ids
  item: dict[str, dict[str, Any]]       # item -> text fields + original id
  time: dict[str, list[int]]            # user -> unix seconds, as inter
  orig_user_key: str                    # 'userId' or 'reviewerID'
  orig_user_ids: dict[str, Any]         # user -> original user id


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
  """[E] bool keep-mask of the k-core of a user-item interaction list.

  Repeatedly drops users and items with fewer than k remaining interactions
  (the k-core is unique, whatever the removal order).

  Args:
    users: [E] int user codes.
    items: [E] int item codes.
    k: minimum interactions per user and per item.
  """
  keep = np.ones(users.shape, bool)
  while True:
    user_count = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
    item_count = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
    new_keep = keep & (user_count[users] >= k) & (item_count[items] >= k)
    if np.array_equal(new_keep, keep):
      return keep
    keep = new_keep


def _number(users, items, times, tiebreak):
  """Sorts interactions and numbers users/items by first appearance.

  Args:
    users: [E] int user rank (the user numbering order).
    items: [E] original item ids (any sortable dtype).
    times: [E] int64 timestamps.
    tiebreak: [E] secondary key within equal timestamps.

  Returns:
    (order [E], user index [E], item index [E], first-appearance items [N]),
    index arrays in the sorted order.
  """
  order = np.lexsort((tiebreak, times, users))
  users, items = users[order], items[order]
  uniq, first, item_code = np.unique(items, return_index=True,
                                     return_inverse=True)
  rank = np.empty(uniq.size, np.int64)
  rank[np.argsort(first, kind='stable')] = np.arange(uniq.size)
  _, user_idx = np.unique(users, return_inverse=True)
  return order, user_idx, rank[item_code], uniq[np.argsort(first)]


def _group(user_idx, values):
  out = collections.defaultdict(list)
  for u, v in zip(user_idx.tolist(), values.tolist()):
    out[str(u)].append(v)
  return dict(out)


def _read_csv(path: pathlib.Path, columns: tuple[str, ...]):
  """Yields (line number, row dict) of a CSV whose header must be `columns`."""
  reader = csv.reader(io.StringIO(files.read_text(path), newline=''))
  header = next(reader, None)
  if header is None or tuple(header) != columns:
    raise DataError(f'{path}: header must be {",".join(columns)}, got '
                    f'{header}')
  for row in reader:
    line = reader.line_num
    if len(row) != len(columns):
      raise DataError(f'{path}: line {line}: expected {len(columns)} fields, '
                      f'got {len(row)}')
    yield line, dict(zip(columns, row))


def _to_int(path, line, row, key) -> int:
  try:
    return int(row[key])
  except ValueError as e:
    raise DataError(f'{path}: line {line}: field {key!r} must be an integer, '
                    f'got {row[key]!r}') from e


def convert_movielens(ratings_path: files.PathLike,
                      movies_path: files.PathLike, *,
                      min_count: int = 5) -> Converted:
  """Converts GroupLens ratings.csv and movies.csv (gz or plain)."""
  ratings_path, movies_path = pathlib.Path(ratings_path), pathlib.Path(
      movies_path)
  movies = {}
  for line, row in _read_csv(movies_path, ('movieId', 'title', 'genres')):
    movie = _to_int(movies_path, line, row, 'movieId')
    if movie in movies:
      raise DataError(f'{movies_path}: line {line}: movieId {movie} repeated')
    genres = [g for g in row['genres'].split('|')
              if g and g != '(no genres listed)']
    movies[movie] = {'title': row['title'], 'description': '', 'brand': '',
                     'categories': ', '.join(genres), 'movieId': movie}
  rows, seen = [], set()
  for line, row in _read_csv(ratings_path,
                             ('userId', 'movieId', 'rating', 'timestamp')):
    user, movie, ts = (_to_int(ratings_path, line, row, key)
                       for key in ('userId', 'movieId', 'timestamp'))
    if movie not in movies:
      raise DataError(f'{ratings_path}: line {line}: movieId {movie} is not in '
                      f'{movies_path}')
    if (user, movie) in seen:
      raise DataError(f'{ratings_path}: line {line}: userId {user} rated '
                      f'movieId {movie} twice')
    seen.add((user, movie))
    rows.append((user, movie, ts))
  if not rows:
    raise DataError(f'{ratings_path}: no ratings')
  user_arr, movie_arr, time_arr = np.asarray(rows, np.int64).T
  keep = _k_core_or_raise(ratings_path, user_arr, movie_arr, min_count)
  user_arr, movie_arr, time_arr = (
      user_arr[keep], movie_arr[keep], time_arr[keep])
  # Ascending userId is the user order; (timestamp, movieId) within a user.
  order, user_idx, item_idx, item_movies = _number(
      user_arr, movie_arr, time_arr, movie_arr)
  orig_users = np.unique(user_arr)
  return Converted(
      inter=_group(user_idx, item_idx),
      item={str(n): movies[int(m)] for n, m in enumerate(item_movies)},
      time=_group(user_idx, time_arr[order]),
      orig_user_key='userId',
      orig_user_ids={str(u): int(m) for u, m in enumerate(orig_users)})


def _k_core_or_raise(path, users, items, min_count) -> np.ndarray:
  codes = [np.unique(v, return_inverse=True)[1].reshape(-1)
           for v in (users, items)]
  keep = k_core(*codes, min_count)
  if not keep.any():
    raise DataError(f'{path}: no interactions survive the {min_count}-core')
  return keep


def clean_text(raw: str) -> str:
  """HTML-unescaped text without tags, whitespace collapsed."""
  return ' '.join(_TAG.sub(' ', html.unescape(raw)).split())


def clean_title(raw: str) -> str | None:
  """Cleaned title ending in punctuation, or None for empty/junk titles."""
  if _JUNK.search(html.unescape(raw)):
    return None
  title = clean_text(raw)
  if not title:
    return None
  return title if title[-1] in '.!?' else title + '.'


def _json_lines(path: pathlib.Path):
  """Yields (line number, object) of a JSON-lines file; blank lines skipped."""
  for line_no, line in enumerate(files.read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    obj = files.parse_json(line, source=path, line=line_no)
    if not isinstance(obj, dict):
      raise DataError(f'{path}: line {line_no}: expected a JSON object, got '
                      f'{type(obj).__name__}')
    yield line_no, obj


def _field(path, line, obj, key, types, *, required=True, default=None):
  if key not in obj:
    if required:
      raise DataError(f'{path}: line {line}: missing key {key!r}')
    return default
  value = obj[key]
  if not isinstance(value, types) or isinstance(value, bool):
    raise DataError(f'{path}: line {line}: key {key!r} has type '
                    f'{type(value).__name__}')
  return value


def _amazon_meta(path: pathlib.Path) -> dict[str, dict[str, Any]]:
  """asin -> cleaned item meta, for items with a usable title."""
  meta, seen = {}, set()
  for line, obj in _json_lines(path):
    asin = _field(path, line, obj, 'asin', str)
    if asin in seen:
      continue
    seen.add(asin)
    title = clean_title(_field(path, line, obj, 'title', str, required=False,
                               default=''))
    if title is None:
      continue
    desc = _field(path, line, obj, 'description', (str, list),
                  required=False, default='')
    cats = _field(path, line, obj, 'category', list, required=False,
                  default=[])
    for key, values in (('description', desc), ('category', cats)):
      if isinstance(values, list) and not all(
          isinstance(v, str) for v in values):
        raise DataError(f'{path}: line {line}: key {key!r} must hold strings')
    desc_parts = desc if isinstance(desc, list) else [desc]
    meta[asin] = {
        'title': title,
        'description': ' '.join(
            t for t in map(clean_text, desc_parts) if t),
        'brand': clean_text(_field(path, line, obj, 'brand', str,
                                   required=False, default='')),
        'categories': ', '.join(t for t in map(clean_text, cats) if t),
        'asin': asin,
    }
  return meta


def convert_amazon(reviews_path: files.PathLike, meta_path: files.PathLike,
                   *, min_count: int = 5) -> Converted:
  """Converts Amazon 2018 review and metadata JSON-lines files."""
  reviews_path, meta_path = pathlib.Path(reviews_path), pathlib.Path(meta_path)
  meta = _amazon_meta(meta_path)
  pairs = {}  # (reviewerID, asin) -> (earliest time, first line of the pair)
  for line, obj in _json_lines(reviews_path):
    user = _field(reviews_path, line, obj, 'reviewerID', str)
    asin = _field(reviews_path, line, obj, 'asin', str)
    ts = _field(reviews_path, line, obj, 'unixReviewTime', int)
    if asin not in meta:
      continue
    if (user, asin) in pairs:
      ts = min(ts, pairs[user, asin][0])
      line = pairs[user, asin][1]
    pairs[user, asin] = (ts, line)
  if not pairs:
    raise DataError(f'{reviews_path}: no reviews of items with a usable '
                    f'title in {meta_path}')
  user_arr = np.asarray([u for u, _ in pairs], dtype=str)
  asin_arr = np.asarray([a for _, a in pairs], dtype=str)
  time_arr, line_arr = np.asarray(list(pairs.values()), np.int64).T
  keep = _k_core_or_raise(reviews_path, user_arr, asin_arr, min_count)
  user_arr, asin_arr, time_arr, line_arr = (
      user_arr[keep], asin_arr[keep], time_arr[keep], line_arr[keep])
  # Users rank by their first surviving review line (LC-Rec numbers users
  # while reading the filtered reviews in file order).
  reviewers, user_code = np.unique(user_arr, return_inverse=True)
  first_line = np.full(reviewers.size, np.iinfo(np.int64).max)
  np.minimum.at(first_line, user_code, line_arr)
  user_rank = np.argsort(np.argsort(first_line))[user_code]
  order, user_idx, item_idx, item_asins = _number(user_rank, asin_arr,
                                                  time_arr, asin_arr)
  ranked_reviewers = reviewers[np.argsort(first_line)]
  return Converted(
      inter=_group(user_idx, item_idx),
      item={str(n): meta[str(a)] for n, a in enumerate(item_asins)},
      time=_group(user_idx, time_arr[order]),
      orig_user_key='reviewerID',
      orig_user_ids={str(u): str(r) for u, r in enumerate(ranked_reviewers)})


def write_converted(converted: Converted, out_dir: files.PathLike, name: str,
                    *, compress: bool = True) -> list[pathlib.Path]:
  """Writes the dataset files atomically; returns their paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  ext = '.json.gz' if compress else '.json'
  outputs = {
      out_dir / f'{name}.inter{ext}': converted.inter,
      out_dir / f'{name}.item{ext}': converted.item,
      out_dir / f'{name}.time{ext}': converted.time,
      out_dir / f'{name}.user2{converted.orig_user_key}{ext}':
          converted.orig_user_ids,
  }
  files.write_json_files(outputs)
  return list(outputs)
