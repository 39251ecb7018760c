r"""Where a fine-tune's paired gain comes from: item popularity and recency.

  python -m launch.gain_breakdown --ref=results/beauty6ep_fresh_cpu/sft_fresh \
      --variants=results/beauty6ep_fresh_cpu/ce_lr1e-3,results/beauty6ep_fresh_cpu/beam_grpo_lr3e-4 \
      --out=results/beauty6ep_fresh_cpu/gain_breakdown

For each variant and split, the paired per-user NDCG@10 difference to REF
(each side averaged per user over the seeds both rows have, as in
launch.make_tables) is split over four groups of rows by their target item:
popular among SFT's targets (the top --top_fraction of items by count) or
not, crossed with trending up or not: the item's share of the fresh
windows' targets (RL's prompt pool, each user's latest training
interactions) over its share of SFT's targets (add-one smoothed) exceeds
--trend. A group's contribution is its rows' summed difference over all
rows, so the four add up to the total; each has its paired 95% bootstrap
CI over rows (10,000 resamples, seed 0). Data settings are REF's
(config.data of its seed results), which must withhold fresh windows.
Writes OUT.json and OUT.md and prints the table.
"""
import os

from absl import app
from absl import flags
import numpy as np

from launch import runtime
from vstar_jax import errors
from vstar_jax.data import files
from vstar_jax.eval import gain_breakdown
from vstar_jax.eval import paired
from vstar_jax.eval import user_ranks

GROUPS = gain_breakdown.GROUPS
METRIC = 'ndcg@10'

_REF = flags.DEFINE_string('ref', None, 'Reference results folder (seedK.json '
                           'with seedK.user_ranks/).', required=True)
_VARIANTS = flags.DEFINE_list('variants', None, 'Results folders compared '
                              'with REF.', required=True)
_OUT = flags.DEFINE_string('out', None, 'Output prefix (OUT.json, OUT.md).',
                           required=True)
_TOP = flags.DEFINE_float('top_fraction', 0.1, 'Popular: this top fraction '
                          'of items by SFT-target count.', lower_bound=0.0,
                          upper_bound=1.0)
_TREND = flags.DEFINE_float('trend', 1.5, 'Trending up: share among fresh '
                            'targets over share among SFT targets above '
                            'this.', lower_bound=0.0)


def _seed_files(folder: str) -> dict[str, str]:
  """{'seedK.json': path} of a results folder."""
  return {os.path.basename(p): p for p in user_ranks.seed_runs(folder)}


def _markdown(rows: list[dict]) -> str:
  header = ['variant', 'split', 'seeds', f'{METRIC} Δ (rel.)'] + [
      f'{g} [95% CI] (rows)' for g in GROUPS]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in rows:
    lines.append('| ' + ' | '.join(
        [r['variant'], r['split'], str(len(r['seeds'])),
         f'{r["diff"]:+.5f} ({100 * r["rel"]:+.1f}%)'] +
        [f'{c:+.5f} [{lo:+.4f}, {hi:+.4f}] ({s:.3f})' for c, (lo, hi), s
         in zip(r['contribution'], r['ci'], r['row_share'])]) + ' |')
  return '\n'.join(lines) + '\n'


def _breakdown():
  ref_seeds = _seed_files(_REF.value)
  if not ref_seeds:
    raise errors.ConfigError(f'--ref={_REF.value}: no seed*.json results')
  groups = gain_breakdown.item_groups_of_run(
      ref_seeds[sorted(ref_seeds)[0]], top_fraction=_TOP.value,
      trend=_TREND.value)
  rows = []
  for variant in _VARIANTS.value:
    names = sorted(set(_seed_files(variant)) & set(ref_seeds))
    if not names:
      raise errors.ConfigError(f'--variants: {variant}: no seed*.json '
                               f'results in common with {_REF.value}')
    for split in ('valid', 'test'):
      values, ref, ranks, _, _ = paired.load_sides(paired.Request(
          tuple(user_ranks.folder_of(os.path.join(variant, n)) for n in names),
          tuple(user_ranks.folder_of(os.path.join(_REF.value, n))
                for n in names), split=split), [METRIC])
      diff, group = values[:, 0] - ref[:, 0], groups[ranks.target]
      contribution, lo, hi = gain_breakdown.contributions(diff, group)
      rows.append({
          'variant': os.path.basename(os.path.normpath(variant)),
          'split': split, 'seeds': names, 'diff': float(diff.mean()),
          'rel': float(diff.mean() / ref[:, 0].mean()),
          'contribution': contribution.tolist(),
          'ci': np.stack([lo, hi], axis=1).tolist(),
          'row_share': (np.bincount(group, minlength=len(GROUPS)) /
                        len(group)).tolist()})
  table = _markdown(rows)
  files.write_files({
      f'{_OUT.value}.json': files.encode_json(
          {'ref': _REF.value, 'groups': GROUPS, 'metric': METRIC,
           'top_fraction': _TOP.value, 'trend': _TREND.value,
           'rows': rows}, indent=1),
      f'{_OUT.value}.md': table.encode()})
  print(table, end='')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runtime.run_main('gain_breakdown', _breakdown)


if __name__ == '__main__':
  app.run(main)
