"""Tests for vstar_jax.data.dataset (the reader) and its validation errors."""
import gzip
import json
import pathlib

import numpy as np
import pytest

from vstar_jax.data import dataset as dataset_lib
from vstar_jax.errors import DataError
from vstar_jax.data import sid_index
from vstar_jax.sid import stats as sid_stats

TOY_DIR = pathlib.Path(__file__).resolve().parents[1] / 'testdata/synthetic'


def _toy_json(kind):
  return json.loads((TOY_DIR / f'toy.{kind}.json').read_text())


def _write(tmp_path, name='ds', **kinds):
  """Writes <name>.<kind>.json files; a str value is written verbatim."""
  for kind, obj in kinds.items():
    text = obj if isinstance(obj, str) else json.dumps(obj)
    (tmp_path / f'{name}.{kind}.json').write_text(text)
  return tmp_path


def _small():
  """A valid 3-user, 4-item dataset (dicts) that each bad case perturbs."""
  return dict(
      inter={'0': [0, 1, 2], '1': [1, 2, 3], '2': [3, 0, 1, 2]},
      item={str(i): {'title': f'Item {i}.'} for i in range(4)},
      index={str(i): [f'<a_{i % 2}>', f'<b_{i}>'] for i in range(4)},
      time={'0': [1, 2, 3], '1': [5, 5, 6], '2': [1, 2, 3, 4]})


def _assert_error(tmp_path, fragments, *, file_kind, index_path=None):
  with pytest.raises(DataError) as info:
    dataset_lib.load_dataset(tmp_path, 'ds', index_path=index_path)
  message = str(info.value)
  assert '\n' not in message
  assert f'ds.{file_kind}.json' in message, message
  for fragment in fragments:
    assert fragment in message, message
  return message


def test_toy_dataset_loads():
  ds = dataset_lib.load_dataset(TOY_DIR, 'toy')
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (30, 40, 225)
  assert ds.item_ids == tuple(str(i) for i in range(40))
  assert ds.num_levels == 3 and ds.codebook_sizes == (4, 4, 4)
  assert ds.sids.dtype == np.int32 and ds.sids.shape == (40, 3)
  assert set(ds.paths) == {'inter', 'item', 'index', 'time'}
  raw_inter, raw_index = _toy_json('inter'), _toy_json('index')
  for u, user in enumerate(ds.user_ids):
    seq = ds.sequences[u]
    assert seq.dtype == np.int32
    assert [ds.item_ids[i] for i in seq] == [str(i) for i in raw_inter[user]]
    assert ds.timestamps[u].dtype == np.int64
    assert len(ds.timestamps[u]) == len(seq)
  assert sid_index.format_sid(ds.sids[7].tolist()) == raw_index['7']
  assert ds.item_meta[0]['description'] == ''  # toy item 0 has ''
  assert ds.item_meta[3]['title'] == 'Toy item 3.'


def test_ids_sort_numerically_and_meta_defaults(tmp_path):
  _write(tmp_path, inter={'10': [10, 2, 1], '9': [1, 2, 10]},
         item={'2': {'title': 'b'}, '10': {'title': 'c', 'movieId': 7},
               '1': {}})
  ds = dataset_lib.load_dataset(tmp_path, 'ds')
  assert ds.item_ids == ('1', '2', '10')
  assert ds.user_ids == ('9', '10')
  np.testing.assert_array_equal(ds.sequences[1], [2, 1, 0])
  assert ds.item_meta[0] == {'title': '', 'description': '', 'brand': '',
                             'categories': ''}
  assert ds.item_meta[2]['movieId'] == 7  # extra fields are kept
  assert ds.sids is None and ds.codebook_sizes is None and ds.num_levels == 0
  assert ds.timestamps is None


def test_gz_files_read_like_plain(tmp_path):
  for path in TOY_DIR.glob('toy.*.json'):
    with gzip.open(tmp_path / (path.name + '.gz'), 'wb') as f:
      f.write(path.read_bytes())
  plain = dataset_lib.load_dataset(TOY_DIR, 'toy')
  gz = dataset_lib.load_dataset(tmp_path, 'toy')
  assert gz.paths['inter'].endswith('toy.inter.json.gz')
  assert gz.item_ids == plain.item_ids and gz.user_ids == plain.user_ids
  np.testing.assert_array_equal(gz.sids, plain.sids)
  for a, b in zip(gz.sequences, plain.sequences):
    np.testing.assert_array_equal(a, b)


def test_without_item_json_items_come_from_inter_and_index(tmp_path):
  _write(tmp_path, inter={'0': [3, 1, 2]},
         index={str(i): ['<a_0>', f'<b_{i}>'] for i in (1, 2, 3, 7)})
  ds = dataset_lib.load_dataset(tmp_path, 'ds')
  assert ds.item_ids == ('1', '2', '3', '7')
  assert all(m['title'] == '' for m in ds.item_meta)
  with pytest.raises(DataError, match='ds.item.json.*require_items'):
    dataset_lib.load_dataset(tmp_path, 'ds', require_items=True)


def test_explicit_index_path(tmp_path):
  small = _small()
  _write(tmp_path, inter=small['inter'], item=small['item'])
  index = tmp_path / 'elsewhere.index.json.gz'
  sid_index.write_sid_index(index, np.array([[0, 0], [1, 1], [0, 2], [1, 3]]),
                            ['0', '1', '2', '3'])
  ds = dataset_lib.load_dataset(tmp_path, 'ds', index_path=index)
  assert ds.paths['index'] == str(index)
  assert ds.codebook_sizes == (2, 4)
  with pytest.raises(DataError, match='missing.index.json: index file not'):
    dataset_lib.load_dataset(tmp_path, 'ds',
                             index_path=tmp_path / 'missing.index.json')


def test_missing_inter_and_ambiguous_gz(tmp_path):
  with pytest.raises(DataError, match=r'ds.inter.json: file not found'):
    dataset_lib.load_dataset(tmp_path, 'ds')
  small = _small()
  _write(tmp_path, inter=small['inter'])
  (tmp_path / 'ds.inter.json.gz').write_bytes(
      gzip.compress(json.dumps(small['inter']).encode()))
  with pytest.raises(DataError, match='both ds.inter.json and'):
    dataset_lib.load_dataset(tmp_path, 'ds')


@pytest.mark.parametrize('kind', ['inter', 'item', 'index', 'time'])
def test_malformed_json_names_file_and_position(tmp_path, kind):
  small = _small()
  small[kind] = '{"0": [1, 2,\n'
  _write(tmp_path, **small)
  _assert_error(tmp_path, ['malformed JSON at line 2 column 1'],
                file_kind=kind)


@pytest.mark.parametrize('kind', ['inter', 'item', 'index', 'time'])
def test_top_level_not_object(tmp_path, kind):
  small = _small()
  small[kind] = [1, 2]
  _write(tmp_path, **small)
  _assert_error(tmp_path, ['top-level value must be a JSON object'],
                file_kind=kind)


def test_duplicate_key_is_an_error(tmp_path):
  small = _small()
  small['inter'] = '{"0": [0, 1, 2], "0": [1, 2, 3]}'
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["duplicate key '0'"], file_kind='inter')


def test_corrupt_gzip(tmp_path):
  (tmp_path / 'ds.inter.json.gz').write_bytes(b'\x1f\x8b not gzip')
  _assert_error(tmp_path, ['corrupt gzip'], file_kind='inter')


@pytest.mark.parametrize('seq,fragment', [
    ([0, 'x'], "got 'x' at position 1"),
    ([0, 1.5], 'got 1.5 at position 1'),
    ([True, 1], 'got True at position 0'),
    ('0 1 2', 'got str'),
    ([0, -1], '>= 0, got -1 at position 1'),
])
def test_sequence_not_int_list_names_user(tmp_path, seq, fragment):
  small = _small()
  small['inter']['u7'] = seq
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["user 'u7'", 'list of ints', fragment],
                file_kind='inter')


def test_unknown_item_names_user_and_item(tmp_path):
  small = _small()
  small['inter']['2'] = [0, 1, 42]
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["user '2'", 'item 42', 'ds.item.json'],
                file_kind='inter')


def test_item_meta_must_be_object_with_string_fields(tmp_path):
  small = _small()
  small['item']['3'] = {'title': 'ok', 'categories': ['a', 'b']}
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["item '3'", "field 'categories'", 'list'],
                file_kind='item')
  small['item']['3'] = 'just a title'
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["item '3'", 'must be an object'], file_kind='item')


def test_item_without_sid(tmp_path):
  small = _small()
  del small['index']['2']
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["item '2' has no SID"], file_kind='index')


def test_index_item_outside_catalogue(tmp_path):
  small = _small()
  small['index']['9'] = ['<a_0>', '<b_9>']
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["item '9' is not in the catalogue"],
                file_kind='index')


def test_sids_of_unequal_length(tmp_path):
  small = _small()
  small['index']['3'] = ['<a_1>', '<b_3>', '<c_0>']
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["item '3'", 'SID has 3 levels', "item '0' has 2"],
                file_kind='index')


@pytest.mark.parametrize('tokens,fragment', [
    (['<a_1>', '<b_x>'], "'<b_x>' at level 1 does not parse"),
    (['<a_1>', 'b_2'], "'b_2' at level 1 does not parse"),
    (['<a_1>', '<b_02>'], "'<b_02>' at level 1 does not parse"),
    (['<a_1>', '<B_2>'], "'<B_2>' at level 1 does not parse"),
    (['<a_1>', 7], '7 at level 1 does not parse'),
    (['<b_1>', '<a_2>'], "level letter 'b', expected 'a'"),
    (['<a_1>', '<c_2>'], "level letter 'c', expected 'b'"),
    ([], 'non-empty list'),
    ('<a_1><b_2>', 'non-empty list'),
])
def test_bad_sid_tokens_name_item(tmp_path, tokens, fragment):
  small = _small()
  small['index']['1'] = tokens
  _write(tmp_path, **small)
  _assert_error(tmp_path, ["item '1'", fragment], file_kind='index')


def test_duplicate_sids_load_and_are_counted(tmp_path):
  small = _small()
  small['index']['3'] = list(small['index']['1'])
  _write(tmp_path, **small)
  ds = dataset_lib.load_dataset(tmp_path, 'ds')
  stats = sid_stats.collision_summary(ds.sids)
  assert (stats['unique_sids'], stats['colliding_items'],
          stats['max_items_per_sid']) == (3, 2, 2)


@pytest.mark.parametrize('change,fragments', [
    (lambda t: t['1'].pop(), ["user '1'", '2 timestamps for 3 items']),
    (lambda t: t.pop('2'), ["user '2' is missing"]),
    (lambda t: t.update({'9': [1]}), ["user '9' is not in inter.json"]),
    (lambda t: t['0'].__setitem__(1, 'x'), ["user '0'", "got 'x'"]),
    (lambda t: t['2'].__setitem__(2, 0), ["user '2'", 'decrease at position 2'
                                          ]),
])
def test_bad_timestamps(tmp_path, change, fragments):
  small = _small()
  change(small['time'])
  _write(tmp_path, **small)
  _assert_error(tmp_path, fragments, file_kind='time')


def test_scientific_counts(shared_data):
  sci = shared_data / 'amazon_scientific'
  ds = dataset_lib.load_dataset(
      sci, 'Scientific',
      index_path=sci / 'indexes/rkmeans_zcr/Scientific.index.json.gz')
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (
      8317, 4344, 58492)
  assert ds.codebook_sizes == (256, 256, 256, 256)
  assert sum(not m['description'] for m in ds.item_meta) == 123
  assert sum(not m['brand'] for m in ds.item_meta) == 12
  assert sum(not m['categories'] for m in ds.item_meta) == 131
  assert sid_stats.collision_summary(ds.sids)['colliding_items'] == 0
  native_path = sci / 'indexes/rqvae_native/Scientific.index.json.gz'
  stats = sid_stats.collision_summary(sid_index.sid_table(
      sid_index.read_sid_index(native_path), source=native_path))
  assert (stats['unique_sids'], stats['colliding_items']) == (3790, 887)


def test_beauty_without_item_json(shared_data):
  beauty = shared_data / 'amazon_beauty'
  ds = dataset_lib.load_dataset(
      beauty, 'Beauty',
      index_path=beauty / 'indexes/letter_repo/Beauty.index.json.gz')
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (
      22363, 12101, 198502)
  assert 'item' not in ds.paths
  stats = sid_stats.collision_summary(ds.sids)
  assert (stats['unique_sids'], stats['colliding_items']) == (12088, 24)


def test_scientific_tiny_slice(shared_data):
  ds = dataset_lib.load_dataset(shared_data / 'amazon_scientific/tiny',
                                'Scientific_tiny')
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (100, 633, 909)
  assert ds.num_levels == 4
  assert 'orig_item_id' in ds.item_meta[0]
