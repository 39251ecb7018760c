"""Train/valid/test next-item examples from a Dataset.

Two protocols:
- `leave_one_out_split` (TIGER, LC-Rec, LETTER): per user, the last item is the
  test target, the second-to-last the validation target, and every prefix ->
  next item inside seq[:-2] is a training window.
- `chronological_split` (MiniOneRec): every position t >= 1 of every user is a
  window; windows are sorted globally by the target's timestamp and cut 8:1:1.

Fresh-prompt protocol (`fresh_windows` k > 0, leave-one-out only): the last
k training windows of each user, the interactions just before its validation
item, are withheld from SFT and form RL's prompt pool, so that RL is not
trained on windows SFT has memorised; validation and test are unchanged.
`stage_examples` says which training windows each stage reads.

Histories are RIGHT-aligned: column T-1 holds the item just before the target,
older items to its left, and the unused left columns hold PAD_ITEM_IDX with
history_mask False. Every example has at least one history item.
"""
import dataclasses

import numpy as np

from vstar_jax import errors
from vstar_jax.data import dataset as dataset_lib

PAD_ITEM_IDX = -1
LOO_MIN_LENGTH = 3


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
  """M next-item examples with fixed-width, right-aligned histories."""
  history: np.ndarray       # [M, T] int32, PAD_ITEM_IDX where not history_mask
  history_mask: np.ndarray  # [M, T] bool, True = real item
  target: np.ndarray        # [M] int32 item index
  user: np.ndarray          # [M] int32 user index

  def __len__(self) -> int:
    return int(self.target.shape[0])

  @property
  def max_history(self) -> int:
    return int(self.history.shape[1])

  def take(self, rows: np.ndarray) -> 'Examples':
    """The examples at `rows` ([R] int or [M] bool), in that order."""
    return Examples(history=self.history[rows],
                    history_mask=self.history_mask[rows],
                    target=self.target[rows], user=self.user[rows])


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  protocol: str  # 'leave_one_out' or 'chronological'
  train: Examples
  valid: Examples
  test: Examples


def leave_one_out_split(ds: dataset_lib.Dataset, *,
                        max_history: int = 20) -> Split:
  """Leave-one-out split; histories keep the last `max_history` items.

  For a user sequence s of length n: training targets s[1..n-3] (n-3 windows),
  validation target s[n-2] with history s[:n-2], test target s[n-1] with
  history s[:n-1].

  Raises:
    DataError: a user has fewer than 3 interactions.
  """
  _check_max_history(max_history)
  lengths = _lengths(ds)
  short = np.flatnonzero(lengths < LOO_MIN_LENGTH)
  if short.size:
    u = int(short[0])
    raise errors.DataError(
        f'{ds.paths["inter"]}: user {ds.user_ids[u]!r} has {lengths[u]} '
        f'interactions; leave-one-out needs at least {LOO_MIN_LENGTH}')
  users = np.arange(ds.num_users, dtype=np.int64)
  train_users = np.repeat(users, lengths - 3)
  # Positions 1..n-3 of each user: a running count within each user's block.
  block_start = np.repeat(np.cumsum(lengths - 3) - (lengths - 3), lengths - 3)
  train_pos = np.arange(train_users.size) - block_start + 1
  flat, starts = _flatten(ds)
  return Split(
      protocol='leave_one_out',
      train=_examples(flat, starts, train_users, train_pos, max_history),
      valid=_examples(flat, starts, users, lengths - 2, max_history),
      test=_examples(flat, starts, users, lengths - 1, max_history))


def chronological_split(ds: dataset_lib.Dataset, *,
                        max_history: int = 10) -> Split:
  """MiniOneRec's global chronological 8:1:1 split over sliding windows.

  Every position t >= 1 of every user is a window (history: up to
  `max_history` previous items). Windows are ordered by the target's
  timestamp, ties by user index then position; the first int(0.8 M) are
  training, the next int(0.9 M) - int(0.8 M) validation, the rest test.

  Raises:
    DataError: the dataset has no timestamps (`<name>.time.json`).
  """
  _check_max_history(max_history)
  if ds.timestamps is None:
    raise errors.DataError(
        f'{ds.paths["inter"]}: chronological split needs timestamps but '
        f'{ds.name}.time.json[.gz] was not found beside it')
  lengths = _lengths(ds)
  counts = np.maximum(lengths - 1, 0)
  users = np.repeat(np.arange(ds.num_users, dtype=np.int64), counts)
  block_start = np.repeat(np.cumsum(counts) - counts, counts)
  pos = np.arange(users.size) - block_start + 1
  flat, starts = _flatten(ds)
  times = (np.concatenate(ds.timestamps) if ds.timestamps
           else np.zeros(0, np.int64))
  order = np.lexsort((pos, users, times[starts[users] + pos]))
  users, pos = users[order], pos[order]
  num = users.size
  cut_train, cut_valid = int(num * 0.8), int(num * 0.9)
  parts = [slice(0, cut_train), slice(cut_train, cut_valid),
           slice(cut_valid, num)]
  train, valid, test = (
      _examples(flat, starts, users[p], pos[p], max_history) for p in parts)
  return Split(protocol='chronological', train=train, valid=valid, test=test)


def _check_max_history(max_history: int) -> None:
  if max_history < 1:
    raise ValueError(f'max_history must be >= 1, got {max_history}')


def _lengths(ds: dataset_lib.Dataset) -> np.ndarray:
  return np.asarray([len(s) for s in ds.sequences], np.int64)


def _flatten(ds: dataset_lib.Dataset) -> tuple[np.ndarray, np.ndarray]:
  """All sequences concatenated [sum n_u] and each user's start offset [U]."""
  lengths = _lengths(ds)
  flat = (np.concatenate(ds.sequences) if ds.sequences
          else np.zeros(0, np.int32))
  return flat.astype(np.int32), np.cumsum(lengths) - lengths


def _examples(flat: np.ndarray, starts: np.ndarray, users: np.ndarray,
              pos: np.ndarray, max_history: int) -> Examples:
  """Examples whose targets are flat[starts[users] + pos], pos >= 1.

  Args:
    flat: [S] int32 all items, user after user.
    starts: [U] int64 offset of each user's first item in flat.
    users: [M] int64 user index of each example.
    pos: [M] int64 target position within the user's sequence.
    max_history: T.
  """
  target_at = starts[users] + pos                        # [M]
  cols = np.arange(-max_history, 0, dtype=np.int64)      # [T]
  source = target_at[:, None] + cols[None, :]            # [M, T]
  mask = source >= starts[users][:, None]  # stays inside the user's block
  history = np.where(mask, flat[np.maximum(source, 0)], PAD_ITEM_IDX)
  return Examples(
      history=history.astype(np.int32),
      history_mask=mask,
      target=flat[target_at].astype(np.int32),
      user=users.astype(np.int32))


# config.sft.train_on: SFT reads its own windows, or exactly RL's prompts
# (the CE control: same prompts, same SFT checkpoint via config.init_from).
SFT_TRAIN_ON = ('sft_windows', 'rl_prompts')


def fresh_mask(split: Split, fresh_windows: int) -> np.ndarray:
  """[M_train] bool: the last `fresh_windows` training windows of each user.

  Users with fewer training windows give all they have.

  Raises:
    ValueError: a negative k, or k > 0 on a split other than leave-one-out
      (a chronological split has no per-user validation item to precede).
  """
  if fresh_windows < 0:
    raise ValueError(f'config.data.fresh_windows={fresh_windows}: must be '
                     '>= 0')
  users = split.train.user
  if not fresh_windows:
    return np.zeros(users.shape, bool)
  if split.protocol != 'leave_one_out':
    raise ValueError(f'config.data.fresh_windows={fresh_windows} needs the '
                     f'leave_one_out protocol, not {split.protocol!r}')
  # leave_one_out_split lists each user's windows together, oldest first.
  if (np.diff(users) < 0).any():
    raise ValueError('training windows are not grouped by user')
  counts = np.bincount(users)                                   # [U]
  starts = np.cumsum(counts) - counts
  from_end = counts[users] - 1 - (np.arange(users.size) - starts[users])
  return from_end < fresh_windows


def stage_examples(split: Split, stage: str, *, fresh_windows: int = 0,
                   replay_sft_windows: bool = False,
                   sft_train_on: str = 'sft_windows') -> Examples:
  """The training windows a stage reads.

  Args:
    split: the run's split.
    stage: 'sft' or 'rl'.
    fresh_windows: k, windows per user withheld from SFT for RL (0: SFT and
      RL both read every training window, the original protocol).
    replay_sft_windows: RL also draws SFT's windows (with k > 0 its pool is
      then every training window).
    sft_train_on: one of SFT_TRAIN_ON; 'rl_prompts' makes SFT read exactly
      RL's prompts (the CE control).

  Returns:
    Examples in split.train order.
  """
  if sft_train_on not in SFT_TRAIN_ON:
    raise ValueError(f'config.sft.train_on={sft_train_on!r}: expected one '
                     f'of {SFT_TRAIN_ON}')
  if stage not in ('sft', 'rl'):
    raise ValueError(f'stage {stage!r}: expected sft or rl')
  fresh = fresh_mask(split, fresh_windows)
  if stage == 'rl' or sft_train_on == 'rl_prompts':
    if not fresh_windows or replay_sft_windows:
      return split.train
    return split.train.take(fresh)
  return split.train.take(~fresh) if fresh_windows else split.train
