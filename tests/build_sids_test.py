"""End-to-end tests of launch/build_sids.py (subprocess, tiny datasets)."""
import gzip
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vstar_jax.data import dataset as dataset_lib
from vstar_jax.text import embed
from vstar_jax.text import item_text

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY_DIR = REPO / 'testdata' / 'synthetic'
TIMINGS = {'load', 'embed', 'kmeans', 'collisions', 'trie', 'stats', 'write',
           'total'}


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'launch.build_sids', *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300, check=False)


def _error_line(result):
  """The one stderr line of a failed run (exit 1, no traceback)."""
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('build_sids: ')
  return lines[0]


def _toy_embeddings(tmp_path, num_items=40, dim=8):
  path = tmp_path / 'emb.npy'
  np.save(path, np.random.default_rng(0).normal(size=(num_items, dim)).astype(
      np.float32))
  return path


def _write_dataset(folder, items, name='ds'):
  """A dataset whose one user saw every item; items: {id: meta}."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / f'{name}.inter.json').write_text(
      json.dumps({'0': [int(i) for i in items]}))
  (folder / f'{name}.item.json').write_text(json.dumps(items))
  return folder


# Balanced: at most 5 items per level-0 code, so 8 last-level codes fit.
@pytest.mark.slow
@pytest.mark.parametrize('method, codebook_size, balanced, num_levels', [
    ('reassign', 8, True, 2), ('extra_level', 4, False, 3)])
def test_writes_index_embeddings_and_stats(tmp_path, method, codebook_size,
                                           balanced, num_levels):
  emb_path = _toy_embeddings(tmp_path)
  out = tmp_path / 'out'
  result = _run(f'--data_dir={TOY_DIR}', '--dataset=toy', f'--out_dir={out}',
                f'--embeddings={emb_path}', '--num_levels=2',
                f'--codebook_size={codebook_size}', '--num_iters=3',
                f'--collisions={method}', f'--balanced={balanced}')
  assert result.returncode == 0, result.stderr
  assert '40 items, 40 unique SIDs' in result.stdout
  assert sorted(p.name for p in out.iterdir()) == [
      'embeddings.npy', 'sid_stats.json', 'toy.index.json.gz']
  with gzip.open(out / 'toy.index.json.gz', 'rt') as f:
    raw = json.load(f)
  assert list(raw) == [str(i) for i in range(40)]
  assert [t[:3] for t in raw['0']] == ['<a_', '<b_', '<c_'][:num_levels]
  # The written index is a valid index of the toy catalogue, SIDs unique.
  ds = dataset_lib.load_dataset(TOY_DIR, 'toy',
                                index_path=out / 'toy.index.json.gz')
  assert ds.sids.shape == (40, num_levels)
  assert np.unique(ds.sids, axis=0).shape[0] == 40
  np.testing.assert_array_equal(np.load(out / 'embeddings.npy'),
                                np.load(emb_path))
  stats = json.loads((out / 'sid_stats.json').read_text())
  assert stats['config'] == {'num_levels': 2,
                             'codebook_size': codebook_size,
                             'num_iters': 3, 'balanced': balanced,
                             'collisions': method}
  assert stats['dataset']['num_items'] == 40
  assert stats['embeddings'] == {'file': str(emb_path)}
  assert stats['num_items'] == 40 and stats['embedding_dim'] == 8
  assert stats['after_resolution']['unique_sids'] == 40
  before = stats['before_resolution']
  assert before['colliding_items'] > 0
  assert before['colliding_items'] == stats['collisions']['before'][
      'colliding_items']
  assert all(0 < l['usage'] <= 1 for l in before['levels'])
  assert stats['trie']['num_prefixes'][0] == 1
  assert set(stats['timings_s']) == TIMINGS
  assert stats['timings_s']['total'] >= stats['timings_s']['kmeans'] > 0


@pytest.mark.slow
def test_real_encoder_on_a_few_items(tmp_path):
  items = {
      '0': {'title': 'Red pen.', 'description': 'A red ballpoint pen.'},
      '1': {'title': 'Blue pen.', 'brand': 'Acme'},
      '2': {'title': 'Lab goggles.', 'categories': 'Safety,Eyewear'},
      '3': {'title': 'Nitrile gloves.', 'description': 'Box of 100.'},
      '4': {'title': 'Beaker 250 ml.', 'categories': 'Lab,Glass'},
      '5': {'title': 'Digital scale.', 'brand': 'Ohaus'},
  }
  data_dir = _write_dataset(tmp_path / 'data', items)
  out = tmp_path / 'sids' / 'ds'
  result = _run(f'--data_dir={data_dir}', '--dataset=ds', f'--out_dir={out}',
                '--text_fields=title,brand,description',
                '--max_description_words=2', '--num_levels=2',
                '--codebook_size=4', '--num_iters=2')
  assert result.returncode == 0, result.stderr
  vectors = np.load(out / 'embeddings.npy')
  config = item_text.ItemTextConfig(fields=('title', 'brand', 'description'),
                                    max_description_words=2)
  meta = dataset_lib.load_dataset(data_dir, 'ds').item_meta
  texts = [item_text.item_text(str(i), m, config) for i, m in enumerate(meta)]
  assert texts[0] == 'Title: Red pen.\nDescription: A red'
  np.testing.assert_allclose(vectors, embed.embed_texts(texts), atol=1e-5)
  # The default cache folder is beside the output folder.
  cached = list((tmp_path / 'sids' / '.cache').iterdir())
  assert len(cached) == 1
  np.testing.assert_array_equal(np.load(cached[0]), vectors)
  stats = json.loads((out / 'sid_stats.json').read_text())
  assert stats['embeddings']['text_config']['fields'] == [
      'title', 'brand', 'description']
  assert stats['after_resolution']['unique_sids'] == 6


def _bad_items(tmp_path):
  items = {'0': {'title': 'A.'}, '1': {'title': '', 'brand': ' '}}
  return [f'--data_dir={_write_dataset(tmp_path / "d", items)}',
          '--dataset=ds']


def _malformed_items(tmp_path):
  folder = _write_dataset(tmp_path / 'd', {'0': {'title': 'A.'}})
  (folder / 'ds.item.json').write_text('{"0": {"title": "A."},}')
  return [f'--data_dir={folder}', '--dataset=ds']


def _missing_items(tmp_path):
  folder = _write_dataset(tmp_path / 'd', {'0': {'title': 'A.'}})
  (folder / 'ds.item.json').unlink()
  return [f'--data_dir={folder}', '--dataset=ds']


def _toy_copy(tmp_path):
  shutil.copytree(TOY_DIR, tmp_path / 'toy')
  return [f'--data_dir={tmp_path / "toy"}', '--dataset=toy']


@pytest.mark.slow
@pytest.mark.parametrize('make_args, pattern', [
    (lambda p: [f'--data_dir={p}', '--dataset=none'],
     r'none\.inter\.json: file not found'),
    (_missing_items, r'ds\.item\.json: file not found .*require_items'),
    (_malformed_items, r'ds\.item\.json: malformed JSON at line 1'),
    (_bad_items, r"ds\.item\.json: item '1': fields \('title', 'categories', "
     r"'brand', 'description'\) are all empty$"),
    (lambda p: _toy_copy(p) + ['--num_levels=0'],
     r'^build_sids: num_levels=0: need an int in \[1, 26\]$'),
    (lambda p: _toy_copy(p) + ['--text_fields=title,color'],
     r'ItemTextConfig\.fields='),
    (lambda p: _toy_copy(p) + ['--collisions=magic'],
     r'--collisions.*reassign'),
    (lambda p: _toy_copy(p)[:1], r'--dataset'),
    (lambda p: _toy_copy(p) + [f'--embeddings={_toy_embeddings(p, 39)}'],
     r'emb\.npy: 39 rows for 40 catalogue items$'),
    (lambda p: _toy_copy(p) + [f'--embeddings={_toy_embeddings(p)}',
                               '--num_levels=1', '--codebook_size=4'],
     r'reassign: 40 items share the prefix \[\] but the last level has only '
     r'4 codes'),
])
def test_bad_input_is_one_line_exit_1_nothing_written(tmp_path, make_args,
                                                      pattern):
  args = make_args(tmp_path)
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
  result = _run(*args, f'--out_dir={tmp_path / "sids" / "out"}')
  assert re.search(pattern, _error_line(result)), result.stderr
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == (
      before)
