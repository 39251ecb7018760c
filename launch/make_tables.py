"""Builds WORKSPACE.md's results tables from the committed results/ files.

  python -m launch.make_tables                # rewrite the tables in place
  python -m launch.make_tables --check        # exit 1 if any table is stale

Each table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in
WORKSPACE.md; NAME is `DATASET/STAGE` (e.g. `scientific/sft`), `DATASET` for
all variants of a dataset, or a results sub-folder; `probes:FOLDER` tables
the launch.rl_probe outputs (`seedK.probe_{start,best}.json`) under it,
`levers:FOLDER vs=REF` is an ablation table (validation and test NDCG@10
of each variant with its paired difference to REF), and `summary:NAME`
sets our rows from several folders beside published numbers, as listed in
results/summary/NAME.json (see `summary_table`). A row is a variant
folder `results/DATASET/VARIANT/` holding one `seed*.json` (a run's
results.json) per seed; cells are mean +- population std over seeds of the
test metrics of the run's last stage, selected on validation by the run
itself.

The history rule (config.eval.exclude_history, vstar_jax/eval/history_rule)
is the results' `eval.exclude_history` (absent: False, the rule of every
run before it existed); a row whose runs exclude history items is marked
"(history excluded)" after its variant name, and a row whose seeds used
different rules is an error.

Tables with an RL row get a column "ndcg@10 Δ vs REF [95% CI]": the paired
test NDCG@10 difference of each RL row against the reference variant REF
(`sft` unless the marker says `<!-- table:NAME vs=REF -->`) with its 95%
percentile-bootstrap CI over users (eval/paired.py: each side averaged per
user over the seeds both rows have, 10,000 resamples, seed 0; "n/a (no
common seed)" if they share none). It needs per-user ranks
`seedK.user_ranks/` beside every `seedK.json` of both rows (copied from the
runs' `results.user_ranks/`); "n/a" otherwise.
"""
import collections
import glob
import json
import os
import re
import sys

from absl import app
from absl import flags
import numpy as np

from vstar_jax.eval import paired
from vstar_jax.eval import user_ranks

_WORKSPACE = flags.DEFINE_string('workspace', 'WORKSPACE.md', 'File to edit.')
_RESULTS = flags.DEFINE_string('results', 'results', 'Results folder.')
_CHECK = flags.DEFINE_bool('check', False, 'Only check the tables are fresh.')

METRICS = ('hr@1', 'hr@3', 'hr@5', 'hr@10', 'ndcg@3', 'ndcg@5', 'ndcg@10',
           'coverage@10', 'long_tail_share@10', 'distinct_l1@10')
_MARKER = re.compile(r'(<!-- table:(?P<name>[^ ]+)(?: vs=(?P<ref>[^ ]+))? '
                     r'-->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)', re.S)
DELTA_METRIC = 'ndcg@10'



def _stage_metrics(result: dict, stage: str | None):
  stages = list(result['metrics'])
  stage = stage or stages[-1]
  return stage, result['metrics'][stage]['test']


def _mean_std(values: list[float]) -> str:
  if len(values) == 1:
    return f'{values[0]:.4f}'
  return f'{np.mean(values):.4f} ± {np.std(values):.4f}'


def _excludes_history(runs: list[dict], folder: str) -> bool:
  """The seeds' one history rule (eval.exclude_history; absent: False)."""
  rules = {r['eval'].get('exclude_history', False) for r in runs}
  if len(rules) > 1:
    raise ValueError(f'{folder}: its seeds use different history rules '
                     '(eval.exclude_history)')
  return rules == {True}


def _row(variant_dir: str, stage: str | None):
  runs = user_ranks.seed_runs(variant_dir)
  if not runs:
    return None
  loaded = [json.load(open(p)) for p in runs]
  excluded = _excludes_history(loaded, variant_dir)
  stage_name, _ = _stage_metrics(loaded[0], stage)
  tests = [_stage_metrics(r, stage)[1] for r in loaded]
  cells = []
  for m in METRICS:
    vals = [t[m] for t in tests if m in t]
    cells.append(_mean_std(vals) if vals else '')
  beam = loaded[0]['eval']['beam_width']
  # Wall time per device kind: CPU and GPU runs of one row are not averaged.
  secs = collections.defaultdict(list)
  for r in loaded:
    secs[_device_name(r)].append(r['timings'].get('wall_s', float('nan')))
  wall = ', '.join(f'{np.mean(v) / 60:.1f} ({k}, {len(v)})'
                   for k, v in sorted(secs.items()))
  name = os.path.basename(variant_dir)
  if excluded:
    name += ' (history excluded)'
  return [name, stage_name, str(len(runs)), str(beam)] + cells + [wall]


def _device_name(result: dict) -> str:
  device = result.get('device', 'unknown')
  return device.replace('NVIDIA ', '')


class _DeltaCells:
  """The paired DELTA_METRIC cells of all tables, computed together.

  Tables ask for a cell and get a placeholder; `fill` computes every asked
  comparison in one paired.compare_many (cells with as many rows share
  their bootstrap draws, which dominate the time) and puts the cells in.
  """
  _PLACEHOLDER = re.compile(r'\x00delta(\d+)\x00')

  def __init__(self):
    self._requests = []

  def ask(self, request: paired.Request) -> str:
    self._requests.append(request)
    return f'\x00delta{len(self._requests) - 1}\x00'

  def fill(self, text: str) -> str:
    comparisons = paired.compare_many(self._requests, metrics=(DELTA_METRIC,))
    return self._PLACEHOLDER.sub(lambda m: paired.format_delta(
        comparisons[int(m.group(1))].deltas[0]), text)


def _delta_cell(cells: _DeltaCells, variant_dir: str, ref_dir: str,
                stage: str, split: str = 'test', by_seed: bool = True) -> str:
  """Paired DELTA_METRIC difference vs the reference row, or 'n/a'.

  by_seed: use only the seeds both rows have (an RL run against its own
  SFT seed); else every seed of each row, averaged per user.
  """
  if os.path.normpath(variant_dir) == os.path.normpath(ref_dir):
    return 'ref.'
  seeds = [{os.path.basename(p): p for p in user_ranks.seed_runs(d)}
           for d in (variant_dir, ref_dir)]
  if not seeds[0] or not seeds[1]:
    return 'n/a'
  common = sorted(set(seeds[0]) & set(seeds[1]))
  if by_seed and not common:
    return 'n/a (no common seed)'
  sides = []
  for by_name in seeds:
    names = common if by_seed else sorted(by_name)
    folders = [user_ranks.folder_of(by_name[n]) for n in names]
    if not all(f.is_dir() for f in folders):
      return 'n/a'
    sides.append(tuple(folders))
  return cells.ask(paired.Request(sides[0], sides[1], stage_a=stage,
                                  split=split))


def table(results_dir: str, name: str, ref: str | None = None,
          cells: _DeltaCells | None = None) -> str:
  """Markdown table for a `DATASET[/VARIANT]` name.

  Args:
    results_dir: the results folder.
    name: the table's folder under it.
    ref: the variant RL tables' delta column compares with ('sft' if None).
    cells: where its delta cells are asked (None: filled here).
  """
  own_cells, cells = cells is None, cells or _DeltaCells()
  base = os.path.join(results_dir, name)
  dirs = ([base] if user_ranks.seed_runs(base) else
          sorted(d for d in glob.glob(os.path.join(base, '*'))
                 if os.path.isdir(d)))
  rows = [(d, r) for d, r in ((d, _row(d, None)) for d in dirs)
          if r is not None]
  if not rows:
    raise ValueError(f'{base}: no seed*.json results')
  header = (['variant', 'stage', 'seeds', 'beam'] + list(METRICS) +
            ['wall min (device, runs)'])
  if any(r[1] == 'rl' for _, r in rows):
    ref = ref or 'sft'
    header.append(f'{DELTA_METRIC} Δ vs {ref} [95% CI]')
    rows = [(d, r + [_delta_cell(cells, d, os.path.join(base, ref), r[1])])
            for d, r in rows]
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(r) + ' |' for _, r in rows]
  return _lines_text(lines, cells, own_cells)


PROBE_COLUMNS = (('pool', 'target_in_group'), ('pool', 'zero_adv_frac'),
                 ('pool', 'ndcg@10'), ('valid', 'target_in_group'),
                 ('valid', 'zero_adv_frac'))


def probe_table(results_dir: str, name: str) -> str:
  """Markdown table of launch.rl_probe outputs under results/NAME.

  A row per variant folder and probed parameter set: its
  `seedK.probe_start.json` (the parameters the run started from) and
  `seedK.probe_best.json` (its selected parameters), means over seeds.
  """
  header = ['variant', 'params', 'seeds', 'rollout', 'prompts'] + [
      f'{s} {m}' for s, m in PROBE_COLUMNS]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for d in sorted(glob.glob(os.path.join(results_dir, name, '*'))):
    for params in ('start', 'best'):
      runs = sorted(glob.glob(os.path.join(d, f'seed*.probe_{params}.json')))
      if not runs:
        continue
      probes = [json.load(open(p)) for p in runs]
      r = probes[0]['rollout']
      rollout = r['kind'] + (f' {r["ved_budget"]} tok.' if r['kind'] == 'ved'
                             else f' {r["beam_width"]}')
      cells = [f'{np.mean([p[s][m] for p in probes]):.4f}'
               for s, m in PROBE_COLUMNS]
      lines.append('| ' + ' | '.join(
          [os.path.basename(d), {'best': 'selected'}.get(params, params),
           str(len(probes)), rollout, str(probes[0]['pool']['prompts'])]
          + cells) + ' |')
  if len(lines) == 2:
    raise ValueError(f'{os.path.join(results_dir, name)}: no probe files')
  return '\n'.join(lines) + '\n'


def lever_table(results_dir: str, name: str, ref: str,
                cells: _DeltaCells | None = None) -> str:
  """An ablation table: a row per variant folder of results/NAME and the
  reference REF (a folder under it, or a path relative to it), with
  NDCG@10 on validation and test, each with its paired difference to REF
  over the seeds both have, and test HR@10 (cells: as in `table`)."""
  own_cells, cells = cells is None, cells or _DeltaCells()
  base = os.path.join(results_dir, name)
  ref_dir = os.path.normpath(os.path.join(base, ref))
  dirs = sorted(os.path.normpath(d) for d in glob.glob(os.path.join(base, '*'))
                if user_ranks.seed_runs(d))
  if not user_ranks.seed_runs(ref_dir):
    raise ValueError(f'{ref_dir}: no seed*.json results (the vs= reference)')
  dirs = [ref_dir] + [d for d in dirs if d != ref_dir]
  ref_name = os.path.basename(ref_dir)
  header = ['variant', 'seeds']
  for split in ('valid', 'test'):
    header += [f'{split} {DELTA_METRIC}', f'{split} Δ vs {ref_name} [95% CI]']
  header.append('test hr@10')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for d in dirs:
    runs = [json.load(open(p)) for p in user_ranks.seed_runs(d)]
    stage = list(runs[0]['metrics'])[-1]
    row = [os.path.basename(d), str(len(runs))]
    for split in ('valid', 'test'):
      row += [_mean_std([r['metrics'][stage][split][DELTA_METRIC]
                           for r in runs]),
                _delta_cell(cells, d, ref_dir, stage, split)]
    row.append(_mean_std([r['metrics'][stage]['test']['hr@10']
                          for r in runs]))
    lines.append('| ' + ' | '.join(row) + ' |')
  return _lines_text(lines, cells, own_cells)


SUMMARY_METRICS = ('hr@5', 'ndcg@5', 'hr@10', 'ndcg@10')


def _cell(value) -> str:
  """A published number: 4 decimals, or a text as given ('about .053')."""
  if value is None or isinstance(value, str):
    return value or ''
  return f'{value:.4f}'


def summary_table(results_dir: str, name: str,
                  cells: _DeltaCells | None = None) -> str:
  """Our rows from several results folders beside published numbers.

  results/summary/NAME.json holds `rows`, each {"model", "results": a
  folder under results/}, the first being the reference of the paired
  column, and `published`, each {"model", "source", and any of
  SUMMARY_METRICS}: numbers copied from papers, shown as given. Our cells
  are test metrics (mean ± std over seeds) and validation NDCG@10; the last
  column is the paired test NDCG@10 difference to the first row, each side
  averaged per user over all its seeds (rows of different models share no
  seed-to-seed pairing). cells: as in `table`.
  """
  own_cells, cells = cells is None, cells or _DeltaCells()
  spec_path = os.path.join(results_dir, 'summary', f'{name}.json')
  try:
    with open(spec_path) as f:
      spec = json.load(f)
    rows, published = spec['rows'], spec['published']
  except (OSError, KeyError, json.JSONDecodeError) as e:
    raise ValueError(f'{spec_path}: {e}') from e
  ref_dir = os.path.join(results_dir, rows[0]['results'])
  header = (['model', 'source', 'history rule', 'seeds', 'valid ndcg@10'] +
            [f'test {m}' for m in SUMMARY_METRICS] +
            [f'test {DELTA_METRIC} Δ vs {rows[0]["model"]} [95% CI]'])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows:
    folder = os.path.join(results_dir, row['results'])
    runs = [json.load(open(p)) for p in user_ranks.seed_runs(folder)]
    if not runs:
      raise ValueError(f'{spec_path}: {folder}: no seed*.json results')
    rule = 'exclude' if _excludes_history(runs, folder) else 'keep'
    stage = list(runs[0]['metrics'])[-1]
    split = lambda s, m: _mean_std([r['metrics'][stage][s][m] for r in runs])
    lines.append('| ' + ' | '.join(
        [row['model'], f'`results/{row["results"]}`',
         rule, str(len(runs)),
         split('valid', DELTA_METRIC)] +
        [split('test', m) for m in SUMMARY_METRICS] +
        [_delta_cell(cells, folder, ref_dir, stage, by_seed=False)]) + ' |')
  for row in published:
    lines.append('| ' + ' | '.join(
        [row['model'], row['source'], 'as published', '', ''] +
        [_cell(row.get(m)) for m in SUMMARY_METRICS] + ['']) + ' |')
  return _lines_text(lines, cells, own_cells)


def _lines_text(lines: list[str], cells: _DeltaCells, fill: bool) -> str:
  text = '\n'.join(lines) + '\n'
  return cells.fill(text) if fill else text


def _render(results_dir: str, name: str, ref: str | None,
            cells: _DeltaCells) -> str:
  if name.startswith('summary:'):
    return summary_table(results_dir, name[len('summary:'):], cells)
  if name.startswith('probes:'):
    return probe_table(results_dir, name[len('probes:'):])
  if name.startswith('levers:'):
    if ref is None:
      raise ValueError(f'table:{name} needs vs=REF')
    return lever_table(results_dir, name[len('levers:'):], ref, cells)
  return table(results_dir, name, ref, cells)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  text = open(_WORKSPACE.value).read()
  cells = _DeltaCells()
  try:
    new = cells.fill(_MARKER.sub(lambda m: m.group(1) + _render(
        _RESULTS.value, m.group('name'), m.group('ref'), cells) + m.group(5),
                                 text))
  except ValueError as e:
    print(f'make_tables: error: {e}', file=sys.stderr)
    sys.exit(1)
  if _CHECK.value:
    if new != text:
      print('make_tables: error: WORKSPACE.md tables are stale; run '
            'python -m launch.make_tables', file=sys.stderr)
      sys.exit(1)
    return
  with open(_WORKSPACE.value, 'w') as f:
    f.write(new)


if __name__ == '__main__':
  app.run(main)
