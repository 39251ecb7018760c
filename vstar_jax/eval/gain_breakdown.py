"""A paired gain split by its target items' popularity and recency.

Under the fresh-prompt protocol (config.data.fresh_windows) the withheld
windows are each user's latest training interactions, so a fine-tune on
them can gain by shifting towards what is recent. This splits a per-row
paired difference over four groups of rows by target item: popular among
SFT's targets or not, crossed with trending up (over-represented among the
fresh windows' targets) or not (launch/gain_breakdown.py).
"""
import numpy as np

from vstar_jax import errors
from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import files
from vstar_jax.data import splits
from vstar_jax.eval import paired

GROUPS = ('popular, trending up', 'popular, not trending',
          'not popular, trending up', 'not popular, not trending')


def item_groups(sft_targets: np.ndarray, fresh_targets: np.ndarray,
                num_items: int, *, top_fraction: float,
                trend: float) -> np.ndarray:
  """[N] index into GROUPS of each item.

  Args:
    sft_targets: [M_sft] item indices SFT trained on as targets.
    fresh_targets: [M_fresh] targets of the withheld (fresh) windows.
    num_items: N.
    top_fraction: the popular items are the top ceil(N * top_fraction) by
      SFT-target count (ties at the boundary included), counts > 0 only.
    trend: an item trends up when (fresh count / M_fresh) over
      ((SFT count + 1) / (M_sft + N)) exceeds it.
  """
  sft = np.bincount(sft_targets, minlength=num_items)
  fresh = np.bincount(fresh_targets, minlength=num_items)
  k = max(1, int(np.ceil(num_items * top_fraction)))
  threshold = max(1, np.sort(sft)[::-1][k - 1])
  popular = sft >= threshold
  ratio = (fresh / max(1, len(fresh_targets))) / (
      (sft + 1) / (len(sft_targets) + num_items))
  up = ratio > trend
  return np.where(popular, np.where(up, 0, 1), np.where(up, 2, 3))


def contributions(diff: np.ndarray, group: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each group's summed diff over all M rows (they add to the mean), with
  its paired 95% bootstrap CI (eval/paired.py's resamples of the rows).

  Args:
    diff: [M] per-row differences.
    group: [M] group index in [0, len(GROUPS)).

  Returns:
    ([G] contributions, [G] CI low, [G] CI high).
  """
  # Row m's contribution to group g's column is diff[m] if m is in g, else 0:
  # the column means are the contributions.
  columns = diff[:, None] * (group[:, None] == np.arange(len(GROUPS)))
  lo, hi = paired.percentile_ci(paired.bootstrap_means(
      columns, num_resamples=paired.NUM_RESAMPLES, seed=0))
  return columns.mean(axis=0), lo, hi


def item_groups_of_run(seed_file: str, *, top_fraction: float,
                        trend: float) -> np.ndarray:
  """item_groups over the training windows of a run's data (its
  results.json config.data, which must withhold fresh windows)."""
  data = files.read_json_object(seed_file)['config']['data']
  if not data.get('fresh_windows'):
    raise errors.ConfigError(f'{seed_file}: config.data.fresh_windows is 0 '
                             '(no fresh windows to define recency)')
  # Items and windows only: the SIDs (perhaps built in a run) do not matter.
  ds = dataset_lib.load_dataset(data['dir'], data['name'])
  split = splits.leave_one_out_split(ds, max_history=data['max_history'])
  fresh = splits.fresh_mask(split, data['fresh_windows'])
  return item_groups(split.train.target[~fresh], split.train.target[fresh],
                     ds.num_items, top_fraction=top_fraction, trend=trend)
