"""Tests of the MiniLM encoder and loaders, against sentence-transformers."""
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from launch import make_encoder_reference
from vstar_jax.text import embed
from vstar_jax.text import minilm

REFERENCE = (pathlib.Path(__file__).resolve().parents[1] / 'testdata' /
             'encoder_reference.json')
TINY = minilm.MiniLMConfig(vocab_size=11, hidden_size=8, num_layers=1,
                           num_heads=2, intermediate_size=16,
                           max_position_embeddings=12, max_seq_length=10)


@pytest.fixture(scope='module')
def reference():
  with open(REFERENCE, encoding='utf-8') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def texts(reference, shared_data):
  """The reference texts, rebuilt from ../shared/data (never copied here)."""
  sources_texts = make_encoder_reference.select_texts(shared_data)
  entries = reference['entries']
  assert [s for s, _ in sources_texts] == [e['source'] for e in entries]
  for (source, text), entry in zip(sources_texts, entries):
    assert make_encoder_reference.text_sha256(text) == entry['text_sha256'], (
        source)
  return [text for _, text in sources_texts]


@pytest.fixture(scope='module')
def ours(texts):
  return embed.embed_texts(texts)


def test_reference_covers_truncation(reference):
  entries = reference['entries']
  assert len(entries) >= 24
  num_long = sum(e['num_tokens_untruncated'] > reference['max_seq_length']
                 for e in entries)
  assert num_long >= 4


def test_tokenizer_matches_sentence_transformers_lengths(reference, texts):
  encoder = embed.get_encoder()
  assert encoder.model.config.max_seq_length == reference['max_seq_length']
  ids = encoder.token_ids(texts)
  for entry, token_ids in zip(reference['entries'], ids):
    want = min(entry['num_tokens_untruncated'], reference['max_seq_length'])
    assert len(token_ids) == want, entry['source']
    assert token_ids[0] == 101 and token_ids[-1] == 102  # [CLS] ... [SEP]


@pytest.mark.slow
def test_parity_with_sentence_transformers(reference, ours):
  want = np.array([e['vector'] for e in reference['entries']], np.float32)
  assert ours.shape == want.shape == (len(want), 384)
  assert ours.dtype == np.float32
  want /= np.linalg.norm(want, axis=1, keepdims=True)  # undo the rounding
  cosine = (ours * want).sum(axis=1)
  assert cosine.min() >= 0.9999, dict(zip(
      [e['source'] for e in reference['entries']], cosine))
  np.testing.assert_allclose(ours, want, atol=1e-4)


@pytest.mark.slow
def test_unit_norm(ours):
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_padding_and_batch_invariance():
  encoder = embed.get_encoder()
  model = minilm.MiniLMEncoder(encoder.model.config)
  apply = jax.jit(model.apply)
  short, longer = encoder.token_ids(['Zoolander (2001)',
                                     'Title: Gorilla Tape, Black Duct Tape.'])
  assert len(short) < len(longer) <= 16
  idx = np.zeros((2, 32), np.int32)
  mask = np.zeros((2, 32), bool)
  for row, ids in enumerate([longer, short]):
    idx[row, :len(ids)], mask[row, :len(ids)] = ids, True
  batched = apply({'params': encoder.model.params}, idx, mask)
  alone = apply({'params': encoder.model.params},
                idx[1:, :len(short)], mask[1:, :len(short)])
  np.testing.assert_allclose(batched[1:], alone, atol=2e-6)


def test_all_padding_row_is_zero_not_nan():
  hidden = jnp.ones((2, 3, 4))
  mask = jnp.array([[True, True, False], [False, False, False]])
  pooled = minilm.mean_pool_l2_normalise(hidden, mask)
  np.testing.assert_allclose(pooled, [[0.5] * 4, [0.0] * 4], atol=1e-7)


def _write_tiny_weights(model_dir, drop=None, reshape=None):
  # pylint: disable-next=protected-access
  names = minilm._weight_names(TINY.num_layers)
  params = jax.eval_shape(minilm.MiniLMEncoder(TINY).init, jax.random.key(0),
                          jnp.zeros((1, 2), jnp.int32),
                          jnp.ones((1, 2), bool))['params']
  rng = np.random.default_rng(0)
  tensors = {'embeddings.position_ids': np.arange(12)[None]}
  for path, (name, transpose) in names.items():
    shape = _leaf(params, path).shape
    tensors[name] = rng.normal(size=shape[::-1] if transpose else shape
                               ).astype(np.float32)
  if drop:
    del tensors[drop]
  if reshape:
    tensors[reshape] = tensors[reshape][:-1]
  safetensors.numpy.save_file(tensors, str(model_dir / minilm.WEIGHTS_FILE))
  return tensors


def _leaf(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def test_load_params_maps_and_transposes(tmp_path):
  tensors = _write_tiny_weights(tmp_path)
  params = minilm.load_params(tmp_path, TINY)
  np.testing.assert_array_equal(
      params['layer_0']['attention']['query']['kernel'],
      tensors['encoder.layer.0.attention.self.query.weight'].T)
  np.testing.assert_array_equal(
      params['embeddings']['norm']['scale'],
      tensors['embeddings.LayerNorm.weight'])
  out = minilm.MiniLMEncoder(TINY).apply(
      {'params': params}, jnp.array([[1, 5, 2, 0]], jnp.int32),
      jnp.array([[True, True, True, False]]))
  assert out.shape == (1, 8)


def test_load_params_missing_tensor(tmp_path):
  name = 'encoder.layer.0.output.LayerNorm.bias'
  _write_tiny_weights(tmp_path, drop=name)
  with pytest.raises(minilm.ModelFilesError,
                     match=f'model.safetensors: tensor {name!r} is missing'):
    minilm.load_params(tmp_path, TINY)


def test_load_params_wrong_shape(tmp_path):
  name = 'encoder.layer.0.intermediate.dense.weight'
  _write_tiny_weights(tmp_path, reshape=name)
  with pytest.raises(minilm.ModelFilesError) as error:
    minilm.load_params(tmp_path, TINY)
  assert str(error.value).endswith(
      f"tensor {name!r} has shape (15, 8), expected (16, 8)")
  assert '\n' not in str(error.value)


def test_load_params_unreadable_file(tmp_path):
  (tmp_path / minilm.WEIGHTS_FILE).write_bytes(b'not safetensors')
  with pytest.raises(minilm.ModelFilesError, match='model.safetensors: cannot'):
    minilm.load_params(tmp_path, TINY)


def _copy_configs(tmp_path):
  src = minilm.default_model_dir()
  for name in ('modules.json', 'config.json', 'sentence_bert_config.json',
               '1_Pooling/config.json'):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    shutil.copy(src / name, tmp_path / name)


def test_read_config_of_packaged_model():
  config = minilm.read_config(minilm.default_model_dir())
  assert config == minilm.MiniLMConfig()


@pytest.mark.parametrize('name,key,value,match', [
    ('1_Pooling/config.json', 'pooling_mode_cls_token', True,
     "1_Pooling/config.json: key 'pooling_mode_cls_token' is True"),
    ('sentence_bert_config.json', 'max_seq_length', '256',
     "key 'max_seq_length' is '256', expected int"),
    ('config.json', 'hidden_act', 'gelu_new',
     "config.json: key 'hidden_act' is 'gelu_new'; only 'gelu'"),
    ('config.json', 'num_hidden_layers', None,
     "config.json: missing key 'num_hidden_layers'"),
])
def test_read_config_errors(tmp_path, name, key, value, match):
  _copy_configs(tmp_path)
  path = tmp_path / name
  data = json.loads(path.read_text())
  if value is None:
    del data[key]
  else:
    data[key] = value
  path.write_text(json.dumps(data))
  with pytest.raises(minilm.ModelFilesError, match=match):
    minilm.read_config(tmp_path)


def test_read_config_requires_normalize(tmp_path):
  _copy_configs(tmp_path)
  modules = json.loads((tmp_path / 'modules.json').read_text())
  (tmp_path / 'modules.json').write_text(json.dumps(modules[:2]))
  with pytest.raises(minilm.ModelFilesError, match='modules.json: modules'):
    minilm.read_config(tmp_path)


def test_missing_model_dir(tmp_path):
  with pytest.raises(minilm.ModelFilesError, match='does not exist'):
    minilm.load_minilm(tmp_path / 'nope')


def test_bad_tokenizer_file(tmp_path):
  (tmp_path / minilm.TOKENIZER_FILE).write_text('{"model": 1}')
  with pytest.raises(minilm.ModelFilesError,
                     match='tokenizer.json: cannot load tokenizer'):
    minilm.load_tokenizer(tmp_path, TINY)


def test_tokenizer_truncates_to_max_seq_length():
  config = minilm.MiniLMConfig(max_seq_length=8)
  tokenizer = minilm.load_tokenizer(minilm.default_model_dir(), config)
  ids = tokenizer.encode('one two three four five six seven eight nine').ids
  assert len(ids) == 8 and ids[0] == 101 and ids[-1] == 102
