"""Tests of batched, bucketed, cached embedding."""
import jax
import numpy as np
import pytest

from vstar_jax.text import embed
from vstar_jax.text import item_text

SHORT = ['Antz (1998)', 'Zoolander (2001)', 'Duplex (2003)', 'Heat (1995)',
         'Black Sheep (1996)']
MEDIUM = ['Title: Gorilla Tape, Black Duct Tape, 1.88 x 35 yd.\nBrand: Gorilla']
LONG = ['Description: ' + 'a 3D printer filament spool of gold PLA, ' * 4]


@pytest.fixture(scope='module')
def encoder():
  return embed.get_encoder()


def test_order_is_restored(encoder):
  texts = LONG + SHORT + MEDIUM
  lengths = [len(x) for x in encoder.token_ids(texts)]
  assert lengths != sorted(lengths)  # Sorting really reorders here.
  vectors = embed.embed_texts(texts, batch_size=2)
  for i, text in enumerate(texts):
    np.testing.assert_allclose(vectors[i], embed.embed_texts([text])[0],
                               atol=2e-6)


def test_padding_invariance_across_buckets():
  alone = embed.embed_texts(SHORT[:1])
  batched = embed.embed_texts(LONG + SHORT[:1] + MEDIUM, buckets=(256,))
  np.testing.assert_allclose(batched[1], alone[0], atol=2e-6)
  np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_runs_under_transfer_guard(encoder):
  want = encoder.encode(SHORT[:2])
  with jax.transfer_guard('disallow'):
    got = encoder.encode(SHORT[:2])
  np.testing.assert_array_equal(got, want)


def test_one_trace_per_bucket():
  encoder = embed.TextEncoder(buckets=(16, 32, 64, 256))
  texts = SHORT * 3 + MEDIUM * 5 + LONG * 2
  lengths = [len(x) for x in encoder.token_ids(texts)]
  assert sorted(set(lengths)) == [6, 7, 21, 56]  # 15, 5 and 2 texts per bucket
  first = encoder.encode(texts, batch_size=4)  # 4 + 2 + 1 batches.
  assert dict(encoder.trace_counts) == {(4, 16): 1, (4, 32): 1, (2, 64): 1}
  second = encoder.encode(texts[::-1], batch_size=4)
  assert dict(encoder.trace_counts) == {(4, 16): 1, (4, 32): 1, (2, 64): 1}
  np.testing.assert_allclose(second[::-1], first, atol=2e-6)


def test_cache_hit_and_miss(tmp_path, monkeypatch):
  first = embed.embed_texts(SHORT, cache_dir=tmp_path)
  files = sorted(tmp_path.iterdir())
  assert [f.suffix for f in files] == ['.npy']

  def fail(*args, **kwargs):
    raise AssertionError('encoder ran on a cache hit')

  with monkeypatch.context() as patch:
    patch.setattr(embed.TextEncoder, 'encode', fail)
    np.testing.assert_array_equal(
        embed.embed_texts(SHORT, cache_dir=tmp_path, batch_size=2), first)
    with pytest.raises(AssertionError, match='cache hit'):
      embed.embed_texts(SHORT[:-1], cache_dir=tmp_path)
  other = embed.embed_texts(SHORT[:-1], cache_dir=tmp_path)
  np.testing.assert_allclose(other, first[:-1], atol=2e-6)
  assert len(list(tmp_path.iterdir())) == 2  # No temp file left behind.


def test_bad_cache_file(tmp_path):
  embed.embed_texts(SHORT[:2], cache_dir=tmp_path)
  (path,) = tmp_path.iterdir()
  np.save(path, np.zeros((2, 3), np.float32))
  with pytest.raises(embed.EmbedError, match='expected float32'):
    embed.embed_texts(SHORT[:2], cache_dir=tmp_path)


@pytest.mark.parametrize('texts,match', [
    ('one string', 'got one str'), (['a', None], r'texts\[1\] is a NoneType')])
def test_bad_texts(texts, match):
  with pytest.raises(embed.EmbedError, match=match):
    embed.embed_texts(texts)


def test_bad_buckets():
  with pytest.raises(embed.EmbedError, match='ending at max_seq_length=256'):
    embed.get_encoder(buckets=(16, 128))


def test_embed_items_order_and_texts():
  meta = {str(i): dict(title=title, description='', brand='',
                       categories='Comedy')
          for i, title in zip([10, 9, 2], SHORT)}
  ids, vectors = embed.embed_items(meta, batch_size=2)
  assert ids == ['2', '9', '10']
  texts = item_text.item_texts(meta, ids)
  assert texts[0] == 'Title: Duplex (2003)\nCategories: Comedy'
  np.testing.assert_allclose(vectors, embed.embed_texts(texts), atol=2e-6)


@pytest.mark.parametrize('item_id', ['01', 'x', '-1'])
def test_embed_items_bad_id(item_id):
  meta = {item_id: dict(title='t', description='', brand='', categories='')}
  with pytest.raises(item_text.ItemTextError,
                     match=f'item {item_id!r}: id is not'):
    embed.embed_items(meta)
