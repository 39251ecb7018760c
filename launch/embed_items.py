r"""Embeds every item of an LC-Rec `<DS>.item.json[.gz]` with MiniLM.

Measures the cold cost the SID builder pays (weights load, tokenising, one
compile per bucket, forward passes) and optionally saves the vectors:

  PYTHONPATH=. .venv/bin/python launch/embed_items.py \
    --items=../shared/data/amazon_scientific/Scientific.item.json.gz \
    --results=results/text_embed_scientific_cpu.json

Rows of --output follow the item ids in increasing integer order.
"""
import datetime
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.text import embed
from vstar_jax.text import item_text

_ITEMS = flags.DEFINE_string('items', None, '<DS>.item.json[.gz] file.',
                             required=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Optional [N, 384] .npy file.')
_RESULTS = flags.DEFINE_string('results', None,
                               'Optional JSON file for the timings.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', None, 'Embedding cache dir.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', embed.DEFAULT_BATCH_SIZE,
                                   'Most rows per forward pass.')
_MAX_WORDS = flags.DEFINE_integer(
    'max_description_words', item_text.ItemTextConfig.max_description_words,
    'Description words kept; 0 keeps all.')


def _read_items(path: str) -> dict:
  items = files.read_json_object(path)
  if not items:
    raise errors.DataError(f'{path}: no items')
  return items


def _run() -> None:
  items = _read_items(_ITEMS.value)
  text_config = item_text.ItemTextConfig(
      max_description_words=_MAX_WORDS.value or None)
  load_avg_before = os.getloadavg()
  start = time.perf_counter()
  encoder = embed.get_encoder()
  load_seconds = time.perf_counter() - start
  ids, vectors = embed.embed_items(
      items, text_config=text_config, batch_size=_BATCH_SIZE.value,
      cache_dir=_CACHE_DIR.value)
  total_seconds = time.perf_counter() - start
  lengths = [len(x) for x in encoder.token_ids(
      item_text.item_texts(items, ids, text_config))]
  results = {
      'command': ' '.join(sys.argv),
      'date': datetime.date.today().isoformat(),
      'machine': f'{platform.processor() or platform.machine()}, '
                 f'{os.cpu_count()} CPUs, jax {jax.__version__} '
                 f'{jax.default_backend()}',
      'load_avg_1_5_15_before': [round(x, 2) for x in load_avg_before],
      'num_items': len(ids),
      'text_config': str(text_config),
      'batch_size': _BATCH_SIZE.value,
      'buckets': list(encoder.buckets),
      'num_tokens': int(np.sum(lengths)),
      'num_truncated': int(np.sum(np.array(lengths) >=
                                  encoder.model.config.max_seq_length)),
      'traced_shapes': {f'{r}x{t}': n for (r, t), n in
                        sorted(encoder.trace_counts.items())},
      'seconds_load_weights': round(load_seconds, 2),
      'seconds_total': round(total_seconds, 2),
      'items_per_second': round(len(ids) / total_seconds, 1),
  }
  logging.info('Results: %s', results)
  print(json.dumps(results, indent=1))
  outputs = {}
  if _OUTPUT.value:
    outputs[_OUTPUT.value] = files.encode_npy(vectors)
  if _RESULTS.value:
    outputs[_RESULTS.value] = files.encode_json(results, indent=1)
  files.write_files(outputs)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    _run()
  except errors.DataError as e:
    print(f'embed_items: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
