r"""Compares our SID build with precomputed SID index variants.

  python -m launch.compare_sids --stats=runs/sids/sid_stats.json \
      --out=results/sid_comparison

Rows: our build before and after collision resolution (from build_sids'
sid_stats.json) and every index file matched by --indexes (variant = its
folder name). Columns: distinct tokens and usage per level, unique SIDs,
items in colliding SIDs, collision rate (N - unique) / N, mean/max items per
length-(L-1) prefix and the largest sibling group per depth. Prints the
Markdown table and writes <out>.json and <out>.md.
"""
import glob
import pathlib
import sys

from absl import app
from absl import flags

from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.data import sid_index
from vstar_jax.sid import stats

_REPO = pathlib.Path(__file__).resolve().parents[1]
_STATS = flags.DEFINE_string(
    'stats', None, "build_sids' sid_stats.json (omit: variants only).")
_INDEXES = flags.DEFINE_string(
    'indexes', str(_REPO.parent / 'shared' / 'data' / 'amazon_scientific'
                   / 'indexes' / '*' / 'Scientific.index.json.gz'),
    'Glob of precomputed index files; variant name = parent folder.')
_CODEBOOK_SIZE = flags.DEFINE_integer(
    'codebook_size', 256, 'Codebook size of the precomputed variants.')
_OUT = flags.DEFINE_string('out', None, 'Writes OUT.json and OUT.md.',
                           required=True)


def row(name: str, sid_stats: dict) -> dict:
  """One table row from a `stats.sid_stats` dict."""
  last_parent = sid_stats['depths'][-2]
  return {
      'variant': name,
      'num_items': sid_stats['num_items'],
      'num_levels': sid_stats['num_levels'],
      'tokens_per_level': [l['distinct_tokens'] for l in sid_stats['levels']],
      'usage_per_level': [l['usage'] for l in sid_stats['levels']],
      'unique_sids': sid_stats['unique_sids'],
      'colliding_items': sid_stats['colliding_items'],
      'collision_rate': sid_stats['collision_rate'],
      'items_per_last_parent_mean': last_parent['items_per_prefix']['mean'],
      'items_per_last_parent_max': last_parent['items_per_prefix']['max'],
      'max_siblings_per_depth': [d['children_per_prefix']['max']
                                 for d in sid_stats['depths'][:-1]],
  }


def load_build_rows(path: str) -> list[dict]:
  """Rows 'ours (before)' and 'ours (<method>)' from sid_stats.json."""
  built = files.read_json_object(path)
  try:
    method = built['config']['collisions']
    return [row('ours (before resolution)', built['before_resolution']),
            row(f'ours ({method})', built['after_resolution'])]
  except (KeyError, IndexError, TypeError) as e:
    raise errors.DataError(
        f'{path}: not a build_sids sid_stats.json (missing {e})') from e


def variant_rows(paths: list[str], codebook_size: int) -> list[dict]:
  rows = []
  for path in paths:
    codes = sid_index.sid_table(sid_index.read_sid_index(path), source=path)
    rows.append(row(pathlib.Path(path).parent.name,
                    stats.sid_stats(codes, codebook_size)))
  return rows


def markdown_table(rows: list[dict]) -> str:
  lines = [
      '| variant | L | tokens per level | usage per level | unique SIDs | '
      'items in colliding SIDs | collision rate | items per last parent '
      '(mean / max) | max siblings per depth |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    tokens = '/'.join(str(t) for t in r['tokens_per_level'])
    usage = '/'.join(f'{u:.2f}' for u in r['usage_per_level'])
    siblings = '/'.join(str(s) for s in r['max_siblings_per_depth'])
    lines.append(
        f'| {r["variant"]} | {r["num_levels"]} | {tokens} | {usage} | '
        f'{r["unique_sids"]:,} | {r["colliding_items"]:,} | '
        f'{r["collision_rate"]:.4f} | '
        f'{r["items_per_last_parent_mean"]:.2f} / '
        f'{r["items_per_last_parent_max"]} | {siblings} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  paths = sorted(glob.glob(_INDEXES.value))
  try:
    if not paths:
      raise errors.DataError(f'--indexes={_INDEXES.value}: no files match')
    rows = load_build_rows(_STATS.value) if _STATS.value else []
    rows += variant_rows(paths, _CODEBOOK_SIZE.value)
  except errors.DataError as e:
    print(f'compare_sids: {e}', file=sys.stderr)
    return 1
  table = markdown_table(rows)
  print(table, end='')
  files.write_files({
      f'{_OUT.value}.json': files.encode_json(
          {'codebook_size': _CODEBOOK_SIZE.value, 'indexes': paths,
           'stats': _STATS.value, 'rows': rows}, indent=1),
      f'{_OUT.value}.md': table.encode('utf-8'),
  })
  return 0


if __name__ == '__main__':
  app.run(main)
