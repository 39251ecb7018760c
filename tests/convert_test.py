"""Tests for vstar_jax.data.convert and the launch/convert_data binary."""
import gzip
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vstar_jax import errors
from vstar_jax.data import convert
from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import files

REPO = pathlib.Path(__file__).resolve().parents[1]
AMAZON_RAW = REPO / 'testdata/amazon_raw'
BUNDLED = REPO / 'testdata/movielens'


@pytest.fixture(scope='module')
def movielens(shared_data):
  raw = shared_data / 'movielens_latest_small/raw'
  return convert.convert_movielens(raw / 'ratings.csv.gz',
                                   raw / 'movies.csv.gz')


def test_movielens_reproduces_shared_files(movielens, shared_data):
  shipped = shared_data / 'movielens_latest_small'
  assert movielens.inter == files.read_json(
      shipped / 'ml-latest-small.inter.json.gz')
  assert movielens.item == files.read_json(
      shipped / 'ml-latest-small.item.json.gz')
  assert movielens.orig_user_ids == files.read_json(
      shipped / 'ml-latest-small.user2userId.json.gz')


def test_bundled_movielens_is_the_converter_output(movielens, tmp_path):
  written = convert.write_converted(movielens, tmp_path, 'ml-latest-small')
  for path in written:
    assert path.read_bytes() == (BUNDLED / path.name).read_bytes(), path.name


def test_bundled_movielens_loads():
  ds = dataset_lib.load_dataset(BUNDLED, 'ml-latest-small',
                                require_items=True)
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (
      671, 3496, 90072)
  assert min(len(s) for s in ds.sequences) == 16
  assert ds.item_meta[0]['title'] == 'Antz (1998)'
  assert ds.item_meta[0]['categories'] == (
      'Adventure, Animation, Children, Comedy, Fantasy')
  assert all(m['categories'] for m in ds.item_meta)
  first = np.concatenate([t[:1] for t in ds.timestamps])
  assert first.min() >= 789652009  # 1995-01-09, GroupLens' first rating


def _write_csv(path, text):
  path.write_text(text)
  return path


def test_movielens_no_genres_and_kcore(tmp_path):
  # 5 users x 5 movies form the 5-core; movie 99 (2 raters) and user 9
  # (3 ratings, one of them of movie 98) fall out.
  movies = _write_csv(
      tmp_path / 'movies.csv',
      'movieId,title,genres\n5,Movie 5 (2000),(no genres listed)\n' +
      ''.join(f'{m},"Movie {m}, The (2000)",Drama|(no genres listed)\n'
              for m in (1, 2, 3, 4, 98, 99)))
  rows = [(u, m, 1000 * u + (7 - m)) for u in (1, 2, 3, 4, 5)
          for m in (1, 2, 3, 4, 5)]
  rows += [(1, 99, 5), (2, 99, 5), (9, 1, 1), (9, 2, 1), (9, 98, 2)]
  ratings = _write_csv(tmp_path / 'ratings.csv',
                       'userId,movieId,rating,timestamp\n' + ''.join(
                           f'{u},{m},4.0,{t}\n' for u, m, t in rows))
  out = convert.convert_movielens(ratings, movies)
  assert list(out.inter) == ['0', '1', '2', '3', '4']
  assert out.orig_user_ids == {str(i): i + 1 for i in range(5)}
  # Latest-numbered movie first in time; every user repeats that order.
  assert [out.item[str(i)]['movieId'] for i in range(5)] == [5, 4, 3, 2, 1]
  assert out.inter['0'] == [0, 1, 2, 3, 4]
  assert out.item['0']['categories'] == ''
  assert out.item['1'] == {'title': 'Movie 4, The (2000)', 'description': '',
                           'brand': '', 'categories': 'Drama',
                           'movieId': 4}
  assert out.time['0'] == [1002, 1003, 1004, 1005, 1006]


@pytest.mark.parametrize('ratings,fragment', [
    ('userId,movieId,rating\n1,1,4\n', 'header must be'),
    ('userId,movieId,rating,timestamp\n1,x,4,5\n', "line 2: field 'movieId'"),
    ('userId,movieId,rating,timestamp\n1,7,4,5\n', 'movieId 7 is not in'),
    ('userId,movieId,rating,timestamp\n1,1,4,5\n1,1,3,6\n',
     'line 3: userId 1 rated movieId 1 twice'),
    ('userId,movieId,rating,timestamp\n1,1,4\n', 'line 2: expected 4'),
    ('userId,movieId,rating,timestamp\n1,1,4,5\n', 'survive the 5-core'),
])
def test_movielens_bad_input(tmp_path, ratings, fragment):
  movies = _write_csv(tmp_path / 'movies.csv',
                      'movieId,title,genres\n1,A (1999),Drama\n')
  path = _write_csv(tmp_path / 'ratings.csv', ratings)
  with pytest.raises(errors.DataError) as info:
    convert.convert_movielens(path, movies)
  assert 'ratings.csv' in str(info.value) and fragment in str(info.value)


def _amazon(tmp_path=None, gz=False):
  reviews, meta = AMAZON_RAW / 'reviews.jsonl', AMAZON_RAW / 'meta.jsonl'
  if gz:
    paths = []
    for path in (reviews, meta):
      target = tmp_path / (path.name + '.gz')
      target.write_bytes(gzip.compress(path.read_bytes()))
      paths.append(target)
    reviews, meta = paths
  return convert.convert_amazon(reviews, meta)


def test_amazon_rules():
  out = _amazon()
  # U7, U8 and items A7..A11 are gone; see testdata/amazon_raw/README.md.
  assert out.orig_user_ids == {'0': 'U3', '1': 'U1', '2': 'U2', '3': 'U4',
                               '4': 'U5', '5': 'U6'}
  assert [m['asin'] for m in out.item.values()] == [
      'A1', 'A6', 'A2', 'A3', 'A4', 'A5']
  assert out.inter == {'0': [0, 1, 2, 3, 4, 5], '1': [0, 2, 3, 4, 5, 1],
                       '2': [1, 5, 4, 3, 2, 0], '3': [0, 2, 3, 4, 5, 1],
                       '4': [0, 2, 3, 4, 5, 1], '5': [0, 2, 3, 4, 5, 1]}
  # U5's repeated A2 keeps the earlier review; U6's tie orders A3 before A4.
  assert out.time['4'][:2] == [1500500100, 1500500200]
  assert out.time['5'][2:4] == [1500600300, 1500600300]
  assert out.item['0'] == {
      'title': 'Digital Caliper & Gauge Pro.',
      'description': 'Measures 0-150 mm. Stainless steel.',
      'brand': 'Mitu\u00ae', 'categories': 'Industrial & Scientific, Measuring',
      'asin': 'A1'}
  assert out.item['2']['title'] == 'Safety Goggles!'
  assert out.item['2']['description'] == 'Anti-fog lenses.'
  assert out.item['3']['title'] == 'Lab Beaker Set.'
  assert out.item['4']['title'] == 'Nitrile Gloves, 100 Count.'


def test_amazon_gz_input_and_written_dataset(tmp_path):
  out = _amazon(tmp_path, gz=True)
  assert out == _amazon()
  convert.write_converted(out, tmp_path / 'ds', 'Sci', compress=False)
  assert sorted(p.name for p in (tmp_path / 'ds').iterdir()) == [
      'Sci.inter.json', 'Sci.item.json', 'Sci.time.json',
      'Sci.user2reviewerID.json']
  ds = dataset_lib.load_dataset(tmp_path / 'ds', 'Sci')
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (6, 6, 36)
  assert ds.timestamps is not None


@pytest.mark.parametrize('line,fragment', [
    ('{"reviewerID": "U1", "asin": "A1"', 'line 1: malformed JSON'),
    ('[1, 2]', 'line 1: expected a JSON object'),
    ('{"reviewerID": "U1", "unixReviewTime": 5}', "line 1: missing key 'asin'"),
    ('{"reviewerID": "U1", "asin": "A1", "unixReviewTime": "5"}',
     "line 1: key 'unixReviewTime' has type str"),
])
def test_amazon_bad_reviews(tmp_path, line, fragment):
  reviews = tmp_path / 'reviews.jsonl'
  reviews.write_text(line + '\n')
  with pytest.raises(errors.DataError) as info:
    convert.convert_amazon(reviews, AMAZON_RAW / 'meta.jsonl')
  assert str(info.value).startswith(str(reviews))
  assert fragment in str(info.value)


def test_amazon_bad_meta(tmp_path):
  meta = tmp_path / 'meta.jsonl'
  meta.write_text('{"asin": "A1", "title": "T", "category": ["a", 3]}\n')
  with pytest.raises(errors.DataError, match="line 1: key 'category' must"):
    convert.convert_amazon(AMAZON_RAW / 'reviews.jsonl', meta)


@pytest.mark.parametrize('raw,expected', [
    ('Plain Title', 'Plain Title.'),
    ('Ends well.', 'Ends well.'),
    ('Really?', 'Really?'),
    ('Tom &amp; Jerry&#39;s  <i>Box</i>\n', "Tom & Jerry's Box."),
    ('', None),
    ('<br /> ', None),
    ('var aPageStart = (new Date()).getTime();', None),
    ('<span id="x">Hidden</span>', None),
    ('function() { return 1; }', None),
])
def test_clean_title(raw, expected):
  assert convert.clean_title(raw) == expected


def test_k_core_is_iterative():
  # Item 2 has 2 users; dropping it leaves user 1 with one item, which then
  # leaves item 1 with one user: the 2-core is users {0, 2} x items {0, 3}.
  users = np.array([0, 0, 1, 1, 2, 2, 3])
  items = np.array([0, 3, 1, 2, 0, 3, 2])
  keep = convert.k_core(users, items, 2)
  np.testing.assert_array_equal(keep, [1, 1, 0, 0, 1, 1, 0])


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'launch.convert_data', *args],
                        cwd=REPO, capture_output=True, text=True, check=False,
                        timeout=60)


@pytest.mark.slow
def test_convert_data_binary(tmp_path):
  result = _run('--source=amazon', f'--reviews={AMAZON_RAW}/reviews.jsonl',
                f'--meta={AMAZON_RAW}/meta.jsonl', f'--out_dir={tmp_path}',
                '--name=Toy')
  assert result.returncode == 0, result.stderr
  assert 'users 6 items 6 interactions 36' in result.stdout
  ds = dataset_lib.load_dataset(tmp_path, 'Toy')
  assert ds.paths['inter'].endswith('Toy.inter.json.gz')


@pytest.mark.slow
def test_convert_data_binary_bad_input(tmp_path):
  bad = tmp_path / 'reviews.jsonl'
  bad.write_text('{"reviewerID": "U1", "asin": "A1"}\n')
  result = _run('--source=amazon', f'--reviews={bad}',
                f'--meta={AMAZON_RAW}/meta.jsonl', f'--out_dir={tmp_path}/o',
                '--name=Toy')
  assert result.returncode == 1
  assert result.stderr.strip() == (
      f"convert_data: error: {bad}: line 1: missing key 'unixReviewTime'")
  assert not (tmp_path / 'o').exists()
