"""Paired comparison of two evaluations over the same users (host numpy).

The unit is the evaluated row (one per user under leave-one-out): both sides
score the same rows, so the difference of their per-row metrics removes the
between-user variance that dominates unpaired comparisons. A group of seed
runs counts as one side by averaging each row's metric over its seeds first
(the seeds then share the same resampled rows; concatenating seeds instead
would treat one user's correlated rows as independent and narrow the CI).

The 95% CI is the percentile bootstrap over rows: resample r draws M rows
with replacement from np.random.default_rng([seed, r]), so resample r is the
same whatever the chunking, and all metrics share the same resamples.
"""
import collections
import dataclasses
from typing import Sequence

import numpy as np

from vstar_jax.data import files
from vstar_jax.eval import user_ranks

DEFAULT_METRICS = ('ndcg@10', 'hr@10')
NUM_RESAMPLES = 10_000
_MAX_CHUNK_ELEMENTS = 1 << 22   # rows gathered at once (memory bound)


@dataclasses.dataclass(frozen=True)
class PairedDelta:
  """A - B of one metric with its bootstrap CI (absolute and relative)."""
  metric: str
  mean_a: float
  mean_b: float
  diff: float                  # mean_a - mean_b
  ci: tuple[float, float]      # percentile bootstrap of diff
  rows: int

  @property
  def rel(self) -> float:
    """diff relative to B (nan when B is 0)."""
    return self.diff / self.mean_b if self.mean_b else float('nan')

  @property
  def ci_rel(self) -> tuple[float, float]:
    scale = self.mean_b if self.mean_b else float('nan')
    return (self.ci[0] / scale, self.ci[1] / scale)

  @property
  def excludes_zero(self) -> bool:
    return self.ci[0] > 0 or self.ci[1] < 0

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), 'ci': list(self.ci), 'rel': self.rel,
            'ci_rel': list(self.ci_rel), 'excludes_zero': self.excludes_zero}


def bootstrap_means(values: np.ndarray, *, num_resamples: int,
                    seed: int) -> np.ndarray:
  """Means of `num_resamples` row resamples.

  Args:
    values: [M, D] per-row values (D metrics).
    num_resamples: R.
    seed: resample r uses np.random.default_rng([seed, r]).

  Returns:
    [R, D] float64 means.
  """
  values = np.asarray(values, np.float64)
  num_rows = values.shape[0]
  if values.ndim != 2 or num_rows == 0:
    raise ValueError(f'values must be [M > 0, D], got {values.shape}')
  chunk = max(1, _MAX_CHUNK_ELEMENTS // num_rows)
  columns = [np.ascontiguousarray(c) for c in values.T]
  means = np.empty((num_resamples, values.shape[1]))
  for start in range(0, num_resamples, chunk):
    rows = np.stack([np.random.default_rng([seed, r]).integers(
        0, num_rows, num_rows) for r in range(
            start, min(start + chunk, num_resamples))])   # [c, M]
    for d, column in enumerate(columns):   # 1-D gathers: far faster
      means[start:start + len(rows), d] = column[rows].mean(axis=1)
  return means


def percentile_ci(samples: np.ndarray, level: float = 0.95
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(lo, hi) [D] percentiles (1 -/+ level) / 2 of [R, D] samples
  (numpy's default linear interpolation)."""
  if not 0 < level < 1:
    raise ValueError(f'CI level {level} outside (0, 1)')
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
  return lo, hi


def paired_deltas(a: np.ndarray, b: np.ndarray, metrics: Sequence[str], *,
                  num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                  level: float = 0.95) -> list[PairedDelta]:
  """A - B per metric with a paired percentile-bootstrap CI.

  Args:
    a, b: [M, D] per-row metrics of the two sides (rows aligned).
    metrics: the D metric names.
    num_resamples, seed, level: see bootstrap_means / percentile_ci.
  """
  return paired_deltas_many([(a, b)], metrics, num_resamples=num_resamples,
                            seed=seed, level=level)[0]


def paired_deltas_many(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                       metrics: Sequence[str], *,
                       num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> list[list[PairedDelta]]:
  """paired_deltas of each (a, b) pair, equal to calling it on each.

  Resample r's rows depend only on (seed, r, M), so the pairs with M rows
  share one draw (their difference columns side by side): drawing the rows,
  not averaging them, dominates a results table's many cells.

  Args:
    pairs: (a, b), each [M_i, D] per-row metrics (rows aligned).
    metrics: the D metric names.
    num_resamples, seed, level: see bootstrap_means / percentile_ci.
  """
  diffs = []
  for a, b in pairs:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != len(metrics):
      raise ValueError(f'a {a.shape} and b {b.shape} must both be '
                       f'[M, {len(metrics)}]')
    diffs.append((a, b, a - b))
  by_rows = collections.defaultdict(list)
  for i, (_, _, diff) in enumerate(diffs):
    by_rows[len(diff)].append(i)
  cis = {}
  for members in by_rows.values():
    lo, hi = percentile_ci(bootstrap_means(
        np.concatenate([diffs[i][2] for i in members], axis=1),
        num_resamples=num_resamples, seed=seed), level)
    width = len(metrics)
    for k, i in enumerate(members):
      cis[i] = (lo[k * width:(k + 1) * width], hi[k * width:(k + 1) * width])
  return [[PairedDelta(metric=m, mean_a=float(a[:, d].mean()),
                       mean_b=float(b[:, d].mean()),
                       diff=float(diff[:, d].mean()),
                       ci=(float(cis[i][0][d]), float(cis[i][1][d])),
                       rows=len(diff))
           for d, m in enumerate(metrics)]
          for i, (a, b, diff) in enumerate(diffs)]


def group_metrics(runs: Sequence[user_ranks.UserRanks],
                  metrics: Sequence[str], names: Sequence[str]
                  ) -> tuple[np.ndarray, user_ranks.UserRanks]:
  """Per-row metrics averaged over the seed runs of one side.

  Args:
    runs: the runs' ranks of one stage and split (rows must coincide).
    metrics: D names such as 'ndcg@10'.
    names: a label per run, for error messages.

  Returns:
    ([M, D] mean over runs, the first run's ranks (its rows)).

  Raises:
    DataError: runs with other rows (users or targets), or a cutoff beyond
      a run's ranked list.
  """
  first = runs[0]
  for run, name in zip(runs, names):
    if not (np.array_equal(run.user, first.user) and
            np.array_equal(run.target, first.target)):
      raise files.DataError(f'{name}: evaluated users/targets differ from '
                            f'{names[0]} (not the same split)')
    for m in metrics:
      if int(m.partition('@')[2]) > run.list_len:
        raise files.DataError(f'{name}: {m} needs a ranked list of at least '
                              f'{m.partition("@")[2]}, got {run.list_len}')
  per_run = [np.stack([user_ranks.per_user_metric(r.rank, m)
                       for m in metrics], axis=1) for r in runs]
  return np.mean(per_run, axis=0), first


def check_same_rows(a: user_ranks.UserRanks, b: user_ranks.UserRanks,
                    name_a: str, name_b: str) -> None:
  """DataError unless both sides evaluated the same rows."""
  if not (np.array_equal(a.user, b.user) and
          np.array_equal(a.target, b.target)):
    raise files.DataError(f'{name_a} and {name_b} evaluated different '
                          'users/targets (not the same split)')


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Side A vs side B (each one run or a group of seed runs)."""
  stage_a: str
  stage_b: str
  split: str
  runs_a: tuple[str, ...]
  runs_b: tuple[str, ...]
  deltas: tuple[PairedDelta, ...]
  num_resamples: int
  seed: int
  level: float

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out['deltas'] = [d.to_dict() for d in self.deltas]
    return out


def last_stage(folder, split: str) -> str:
  stages = user_ranks.stages_in(folder, split)
  if not stages:
    raise files.DataError(f'{folder}: no per-user rank file for split '
                          f'{split!r}')
  return stages[-1]


@dataclasses.dataclass(frozen=True)
class Request:
  """What `compare` compares: each side's rank folders (user_ranks.resolve)
  of its seed runs, the stage read on each side (None: the last stage with
  a rank file in the side's first run) and the split ('valid' or 'test')."""
  folders_a: tuple
  folders_b: tuple
  stage_a: str | None = None
  stage_b: str | None = None
  split: str = 'test'


def load_sides(request: Request, metrics: Sequence[str]
               ) -> tuple[np.ndarray, np.ndarray, user_ranks.UserRanks, str,
                          str]:
  """([M, D] side A, [M, D] side B, their rows (side A's first run's ranks),
  stage A, stage B), each side's per-row metrics averaged over its runs;
  DataError unless both sides evaluated the same rows."""
  if not request.folders_a or not request.folders_b:
    raise ValueError('each side needs at least one run')
  stages = [request.stage_a or last_stage(request.folders_a[0], request.split),
            request.stage_b or last_stage(request.folders_b[0], request.split)]
  sides = []
  for folders, stage in zip((request.folders_a, request.folders_b), stages):
    runs = [user_ranks.read(f, stage, request.split) for f in folders]
    sides.append(group_metrics(runs, metrics, [str(f) for f in folders]))
  (a, rows_a), (b, rows_b) = sides
  check_same_rows(rows_a, rows_b, str(request.folders_a[0]),
                  str(request.folders_b[0]))
  return a, b, rows_a, stages[0], stages[1]


def compare_many(requests: Sequence[Request], *,
                 metrics: Sequence[str] = DEFAULT_METRICS,
                 num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> list[Comparison]:
  """Paired A - B of each request over the rows of its split, equal to
  `compare` on each (the requests share their bootstrap draws: see
  paired_deltas_many).

  Args:
    requests: the comparisons.
    metrics, num_resamples, seed, level: see paired_deltas.
  """
  for m in metrics:
    user_ranks.per_user_metric(np.zeros(0, np.int32), m)  # name check
  loaded = [load_sides(r, metrics) for r in requests]
  deltas = paired_deltas_many([(a, b) for a, b, _, _, _ in loaded], metrics,
                              num_resamples=num_resamples, seed=seed,
                              level=level)
  return [Comparison(stage_a=stage_a, stage_b=stage_b, split=r.split,
                     runs_a=tuple(map(str, r.folders_a)),
                     runs_b=tuple(map(str, r.folders_b)), deltas=tuple(d),
                     num_resamples=num_resamples, seed=seed, level=level)
          for r, (_, _, _, stage_a, stage_b), d in zip(requests, loaded,
                                                        deltas)]


def compare(folders_a: Sequence, folders_b: Sequence, *,
            stage_a: str | None = None, stage_b: str | None = None,
            split: str = 'test', metrics: Sequence[str] = DEFAULT_METRICS,
            num_resamples: int = NUM_RESAMPLES, seed: int = 0,
            level: float = 0.95) -> Comparison:
  """Paired A - B over the rows of `split` (fields: see Request).

  A side's per-row metrics are averaged over its runs; metrics,
  num_resamples, seed, level: see paired_deltas.
  """
  return compare_many(
      [Request(tuple(folders_a), tuple(folders_b), stage_a, stage_b, split)],
      metrics=metrics, num_resamples=num_resamples, seed=seed,
      level=level)[0]


def format_delta(d: PairedDelta) -> str:
  """'+0.0012 (+3.1%) [+0.0003, +0.0021]': diff, relative, CI."""
  return (f'{d.diff:+.4f} ({100 * d.rel:+.1f}%) '
          f'[{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]')


def markdown(c: Comparison) -> str:
  """A Markdown table of a Comparison (one row per metric)."""
  pct = round(100 * c.level)
  lines = [
      f'A: {c.stage_a} of {", ".join(c.runs_a)}',
      f'B: {c.stage_b} of {", ".join(c.runs_b)}',
      f'split {c.split}, {c.deltas[0].rows} paired rows, {pct}% percentile '
      f'bootstrap CI ({c.num_resamples} resamples, seed {c.seed})', '',
      f'| metric | A | B | A - B | rel. | {pct}% CI | rel. CI | '
      'CI excludes 0 |',
      '|---|---|---|---|---|---|---|---|']
  for d in c.deltas:
    lines.append(
        f'| {d.metric} | {d.mean_a:.4f} | {d.mean_b:.4f} | {d.diff:+.4f} | '
        f'{100 * d.rel:+.2f}% | [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}] | '
        f'[{100 * d.ci_rel[0]:+.2f}%, {100 * d.ci_rel[1]:+.2f}%] | '
        f'{"yes" if d.excludes_zero else "no"} |')
  return '\n'.join(lines) + '\n'


def stage_deltas(ranks: dict[str, dict[str, user_ranks.UserRanks]],
                 metrics: Sequence[str] = DEFAULT_METRICS, **kwargs
                 ) -> dict[str, dict[str, list[PairedDelta]]]:
  """Each later stage of one run against its first, paired per split.

  Args:
    ranks: {stage: {split: ranks}} in stage order (e.g. sft, rl), every
      stage evaluated on the same rows.
    metrics: names such as 'ndcg@10'.
    **kwargs: num_resamples, seed, level (see paired_deltas).

  Returns:
    {later stage: {split: deltas (later - first)}}; empty for one stage.
  """
  first, *later = ranks
  out = {}
  for stage in later:
    out[stage] = {}
    for split, rows in ranks[stage].items():
      base = ranks[first][split]
      check_same_rows(rows, base, stage, first)
      a, _ = group_metrics([rows], metrics, [stage])
      b, _ = group_metrics([base], metrics, [first])
      out[stage][split] = paired_deltas(a, b, metrics, **kwargs)
  return out


def stage_deltas_markdown(deltas: dict[str, dict[str, list[PairedDelta]]],
                          first: str, level: float = 0.95) -> str:
  """Markdown rows 'stage vs first | split | metric | diff (rel) [CI]'."""
  pct = round(100 * level)
  lines = [f'| stage | split | metric | {first} | stage | paired diff '
           f'(rel.) [{pct}% CI] | CI excludes 0 |',
           '|---|---|---|---|---|---|---|']
  for stage, by_split in deltas.items():
    for split, ds in by_split.items():
      for d in ds:
        lines.append(
            f'| {stage} vs {first} | {split} | {d.metric} | {d.mean_b:.4f} '
            f'| {d.mean_a:.4f} | {format_delta(d)} | '
            f'{"yes" if d.excludes_zero else "no"} |')
  return '\n'.join(lines)
