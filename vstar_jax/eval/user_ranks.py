"""Per-user target ranks of an evaluation, on disk beside its JSON report.

The ranks behind a results file `X.json` live in the folder `X.user_ranks/`
(a run's `WORKDIR/results.json` -> `WORKDIR/results.user_ranks/`; a copy
`results/DATASET/VARIANT/seed0.json` -> `seed0.user_ranks/`), one file
`<stage>_<split>.npz` per evaluated stage and split (numpy arrays only, read
with allow_pickle=False):

  user     [M] int32  user index of each evaluated row (split order)
  target   [M] int32  the row's target item index
  rank     [M] int32  0-based position of the target in the decoded top-K
                      list; K (= list_len) when it is not in the list
  list_len []  int32  K, the beam width of the evaluation

HR@k and NDCG@k of the results file are the means of `per_user_metric` over
these rows (eval.evaluate computes both from the same ranks). Rows, not user
ids, are the unit of pairing: under leave-one-out each user has one row per
split; under the chronological protocol a user may have several.
"""
import dataclasses
import io
import pathlib
import re

import numpy as np

from vstar_jax.data import files
from vstar_jax.eval import ranking

SUFFIX = '.user_ranks'
STAGE_ORDER = ('sft', 'rl')


@dataclasses.dataclass(frozen=True, eq=False)
class UserRanks:
  """Target ranks of the M rows of one split (see the module doc)."""
  user: np.ndarray    # [M] int32
  target: np.ndarray  # [M] int32
  rank: np.ndarray    # [M] int32 in [0, list_len]
  list_len: int

  def __len__(self) -> int:
    return int(self.rank.shape[0])


def seed_runs(folder: files.PathLike) -> list[str]:
  """A results folder's run files seedK.json (not seedK.probe_*.json),
  sorted; each may have its ranks in folder_of(file)."""
  return sorted(str(p) for p in pathlib.Path(folder).glob('seed*.json')
                if re.fullmatch(r'seed\d+\.json', p.name))


def folder_of(report_path: files.PathLike) -> pathlib.Path:
  """`X.json` -> `X.user_ranks/` (the folder beside a results file)."""
  path = pathlib.Path(report_path)
  return path.with_name(path.name.removesuffix('.json') + SUFFIX)


def file_name(stage: str, split: str) -> str:
  return f'{stage}_{split}.npz'


def encode(ranks: UserRanks) -> bytes:
  buffer = io.BytesIO()
  np.savez_compressed(
      buffer, user=np.asarray(ranks.user, np.int32),
      target=np.asarray(ranks.target, np.int32),
      rank=np.asarray(ranks.rank, np.int32),
      list_len=np.int32(ranks.list_len))
  return buffer.getvalue()


def write(report_path: files.PathLike, stage: str,
          by_split: dict[str, UserRanks]) -> None:
  """Writes `<stage>_<split>.npz` for each split beside `report_path`."""
  folder = folder_of(report_path)
  files.write_files({folder / file_name(stage, split): encode(r)
                     for split, r in by_split.items()})


def read(folder: files.PathLike, stage: str, split: str) -> UserRanks:
  """Reads one `<stage>_<split>.npz`; bad or missing files -> DataError."""
  path = pathlib.Path(folder) / file_name(stage, split)
  if not path.is_file():
    raise files.DataError(f'{path}: per-user rank file not found')
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in ('user', 'target', 'rank', 'list_len')}
  except (OSError, ValueError, KeyError) as e:
    raise files.DataError(f'{path}: not a per-user rank file ({e})') from e
  list_len = int(arrays['list_len'])
  rank = arrays['rank']
  if (rank.ndim != 1 or arrays['user'].shape != rank.shape or
      arrays['target'].shape != rank.shape):
    raise files.DataError(f'{path}: user, target and rank must be [M] arrays')
  if rank.size and (rank.min() < 0 or rank.max() > list_len):
    raise files.DataError(f'{path}: ranks outside [0, list_len={list_len}]')
  return UserRanks(user=arrays['user'], target=arrays['target'], rank=rank,
                   list_len=list_len)


def stages_in(folder: files.PathLike, split: str) -> list[str]:
  """Stages with a rank file for `split`, in training order."""
  return [s for s in STAGE_ORDER
          if (pathlib.Path(folder) / file_name(s, split)).is_file()]


def resolve(run: str) -> pathlib.Path:
  """The rank folder of a run given as a run directory, a results `X.json`
  or the rank folder itself; DataError when there is none."""
  path = pathlib.Path(run)
  if path.suffix == '.json':
    folder = folder_of(path)
  elif path.name.endswith(SUFFIX):
    folder = path
  else:
    folder = folder_of(path / 'results.json')
  if not folder.is_dir():
    raise files.DataError(f'{run}: no per-user ranks ({folder} not found)')
  return folder


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
  """[M] float64 per-row 'hr@k' or 'ndcg@k' (ranking.per_user_hit_ndcg)."""
  name, _, k = metric.partition('@')
  if name not in ('hr', 'ndcg') or not k.isdigit():
    raise ValueError(f'metric {metric!r}: expected hr@k or ndcg@k')
  hit, ndcg = ranking.per_user_hit_ndcg(ranks, int(k))
  return hit if name == 'hr' else ndcg
