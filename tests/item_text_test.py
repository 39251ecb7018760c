"""Tests of the item-text template."""
import gzip
import json
import pathlib
import re

import pytest

from launch import make_encoder_reference
from vstar_jax.text import item_text

REFERENCE = (pathlib.Path(__file__).resolve().parents[1] / 'testdata' /
             'encoder_reference.json')
META = {
    'title': 'Stanley Staples.',
    'description': 'Heavy-duty\nstaples   for insulation, carpet and felt.',
    'brand': 'Stanley',
    'categories': 'Industrial & Scientific,Fasteners',
}


def test_default_template():
  assert item_text.item_text('1', META) == (
      'Title: Stanley Staples.\n'
      'Categories: Industrial & Scientific,Fasteners\n'
      'Brand: Stanley\n'
      'Description: Heavy-duty staples for insulation, carpet and felt.')


def test_fields_order_and_no_labels():
  config = item_text.ItemTextConfig(fields=('brand', 'title'),
                                    field_labels=False)
  assert item_text.item_text('1', META, config) == 'Stanley\nStanley Staples.'


def test_empty_fields_are_skipped():
  meta = dict(META, brand='', categories='  ')
  assert item_text.item_text('1', meta) == (
      'Title: Stanley Staples.\n'
      'Description: Heavy-duty staples for insulation, carpet and felt.')


def test_description_word_limit():
  config = item_text.ItemTextConfig(fields=('description',),
                                    max_description_words=3)
  assert item_text.item_text('1', META, config) == (
      'Description: Heavy-duty staples for')


@pytest.mark.parametrize('max_chars,want', [
    (17, 'Heavy-duty'),                     # would cut 'staples' in half
    (18, 'Heavy-duty staples'),             # exactly at a word end
    (5, 'Heavy'),                           # one word longer than the limit
    (1000, 'Heavy-duty staples for insulation, carpet and felt.'),
])
def test_description_char_limit(max_chars, want):
  config = item_text.ItemTextConfig(fields=('description',),
                                    field_labels=False,
                                    max_description_chars=max_chars)
  assert item_text.item_text('1', META, config) == want


def test_description_words_then_chars():
  config = item_text.ItemTextConfig(fields=('description',),
                                    field_labels=False,
                                    max_description_words=4,
                                    max_description_chars=22)
  assert item_text.item_text('1', META, config) == 'Heavy-duty staples for'


@pytest.mark.parametrize('meta,match', [
    ({k: v for k, v in META.items() if k != 'brand'},
     "item '7': missing field 'brand'"),
    (dict(META, title=3), "item '7': field 'title' is a int, not a str"),
    ('title', "item '7': metadata is a str, not a dict"),
    (dict(title='', description=' ', brand='', categories=''),
     "item '7': fields .* are all empty"),
])
def test_bad_metadata(meta, match):
  with pytest.raises(item_text.ItemTextError, match=match):
    item_text.item_text('7', meta)


@pytest.mark.parametrize('kwargs', [
    dict(fields=('title', 'price')), dict(fields=()),
    dict(fields=('title', 'title')), dict(max_description_words=0),
    dict(max_description_chars=-1)])
def test_bad_config(kwargs):
  with pytest.raises(item_text.ItemTextError, match='ItemTextConfig'):
    item_text.ItemTextConfig(**kwargs)


def test_item_texts_unknown_id():
  with pytest.raises(item_text.ItemTextError, match="item '2': not in"):
    item_text.item_texts({'1': META}, ['1', '2'])


def test_real_scientific_items(shared_data):
  path = shared_data / 'amazon_scientific' / 'Scientific.item.json.gz'
  with gzip.open(path, 'rt', encoding='utf-8') as f:
    items = json.load(f)
  texts = item_text.item_texts(items, sorted(items, key=int))
  assert len(texts) == 4344 and all(t.startswith('Title: ') for t in texts)
  # The reference texts were built with this template: it must not drift.
  with open(REFERENCE, encoding='utf-8') as f:
    entries = json.load(f)['entries']
  checked = 0
  for entry in entries:
    found = re.fullmatch(r'amazon_scientific item (\d+) \(default '
                         r'ItemTextConfig\)', entry['source'])
    if found:
      assert (make_encoder_reference.text_sha256(texts[int(found[1])]) ==
              entry['text_sha256'])
      checked += 1
  assert checked == 12
