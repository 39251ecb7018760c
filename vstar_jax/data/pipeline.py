"""Deterministic, resumable, process-sharded batches of Examples (host numpy).

The example order of an epoch depends only on (seed, epoch), so every process
computes the same global batches and keeps its contiguous slice of rows
[process_index * B / P, (process_index + 1) * B / P). Batches always have the
same shapes: with drop_remainder=False the last global batch is filled up with
copies of examples from the start of the epoch order whose example_mask is
False (copies rather than sentinels keep padding rows numerically ordinary:
a real history, a real target). Callers weight losses and metrics by
example_mask.
"""
from typing import Iterator

import numpy as np

from vstar_jax.data import splits

Batch = dict[str, np.ndarray]


def num_batches(num_examples: int, *, batch_size: int,
                drop_remainder: bool) -> int:
  """Global batches per epoch."""
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def epoch_order(num_examples: int, *, seed: int, epoch: int,
                shuffle: bool) -> np.ndarray:
  """[M] int64 example order of one epoch; a function of (seed, epoch) only."""
  if not shuffle:
    return np.arange(num_examples, dtype=np.int64)
  rng = np.random.default_rng([seed, epoch])
  return rng.permutation(num_examples).astype(np.int64)


Rows = tuple[np.ndarray, np.ndarray]


def batch_rows(num_examples: int, *, batch_size: int, seed: int, epoch: int,
               shuffle: bool, drop_remainder: bool, process_index: int = 0,
               process_count: int = 1, start_batch: int = 0
               ) -> Iterator[Rows]:
  """Yields which examples make up this process's part of every batch.

  The arguments are those of `batches` (with the number of examples M).

  Yields:
    (rows [b] int32 example indices, valid [b] bool) with b = B // P; an
    invalid row (padding) repeats an example from the start of the epoch.
  """
  _check_sharding(batch_size, process_index, process_count)
  total = num_batches(num_examples, batch_size=batch_size,
                      drop_remainder=drop_remainder)
  if not 0 <= start_batch <= total:
    raise ValueError(f'start_batch {start_batch} outside [0, {total}]')
  if num_examples == 0:
    return
  order = epoch_order(num_examples, seed=seed, epoch=epoch, shuffle=shuffle)
  local = batch_size // process_count
  lo = process_index * local
  for b in range(start_batch, total):
    rows = np.arange(b * batch_size + lo, b * batch_size + lo + local)
    valid = rows < num_examples
    yield order[np.where(valid, rows, rows % num_examples)].astype(
        np.int32), valid


def take(examples: splits.Examples, rows: Rows) -> Batch:
  """The batch of `batch_rows`' (rows, valid) (see `batches`)."""
  idx, valid = rows
  return {
      'history': examples.history[idx],
      'history_mask': examples.history_mask[idx],
      'target': examples.target[idx],
      'user': examples.user[idx],
      'example_mask': valid,
  }


def batches(examples: splits.Examples, *, batch_size: int, seed: int,
            epoch: int, shuffle: bool, drop_remainder: bool,
            process_index: int = 0, process_count: int = 1,
            start_batch: int = 0) -> Iterator[Batch]:
  """Yields this process's part of every global batch of one epoch.

  Args:
    examples: the M examples (history width T).
    batch_size: GLOBAL batch size B, divisible by process_count.
    seed: shuffle seed (non-negative).
    epoch: epoch number, folded into the shuffle.
    shuffle: permute examples (else dataset order).
    drop_remainder: drop the last partial batch instead of padding it.
    process_index: this process, in [0, process_count).
    process_count: number of processes P sharing the global batch.
    start_batch: first batch to yield (resume within the epoch).

  Yields:
    Dicts with b = B // P rows: 'history' [b, T] int32, 'history_mask' [b, T]
    bool, 'target' [b] int32, 'user' [b] int32, 'example_mask' [b] bool
    (False for padding rows).
  """
  for rows in batch_rows(
      len(examples), batch_size=batch_size, seed=seed, epoch=epoch,
      shuffle=shuffle, drop_remainder=drop_remainder,
      process_index=process_index, process_count=process_count,
      start_batch=start_batch):
    yield take(examples, rows)


class BatchIterator:
  """Endless epoch-after-epoch batches with a JSON-serialisable position.

  `next_rows()` gives the next batch as example indices (`batch_rows`), for
  callers that keep the examples on the device; `next()` gives the batch.
  `state()` is {'epoch': e, 'batch_in_epoch': b}: the next batch is batch b of
  epoch e. Restoring that dict into an iterator built with the same arguments
  continues with exactly the batches the saved one would have produced.
  """

  def __init__(self, examples: splits.Examples, *, batch_size: int, seed: int,
               shuffle: bool, drop_remainder: bool, process_index: int = 0,
               process_count: int = 1):
    _check_sharding(batch_size, process_index, process_count)
    self._examples = examples
    self._kwargs = dict(batch_size=batch_size, seed=seed, shuffle=shuffle,
                        drop_remainder=drop_remainder,
                        process_index=process_index,
                        process_count=process_count)
    self.batches_per_epoch = num_batches(
        len(examples), batch_size=batch_size, drop_remainder=drop_remainder)
    if self.batches_per_epoch == 0:
      raise ValueError(f'{len(examples)} examples give no batch of '
                       f'{batch_size} (drop_remainder={drop_remainder})')
    self._epoch = 0
    self._batch = 0
    self._it = None

  def state(self) -> dict[str, int]:
    return {'epoch': self._epoch, 'batch_in_epoch': self._batch}

  def restore(self, state: dict[str, int]) -> None:
    epoch, batch = int(state['epoch']), int(state['batch_in_epoch'])
    if epoch < 0 or not 0 <= batch <= self.batches_per_epoch:
      raise ValueError(f'invalid iterator state {state}; this iterator has '
                       f'{self.batches_per_epoch} batches per epoch')
    self._epoch, self._batch, self._it = epoch, batch, None

  def __iter__(self) -> 'BatchIterator':
    return self

  def next_rows(self) -> Rows:
    """(rows [b] int32, valid [b] bool) of the next batch; see batch_rows."""
    if self._batch == self.batches_per_epoch:
      self._epoch, self._batch, self._it = self._epoch + 1, 0, None
    if self._it is None:
      self._it = batch_rows(len(self._examples), epoch=self._epoch,
                            start_batch=self._batch, **self._kwargs)
    rows = next(self._it)
    self._batch += 1
    return rows

  def __next__(self) -> Batch:
    return take(self._examples, self.next_rows())


def _check_sharding(batch_size: int, process_index: int,
                    process_count: int) -> None:
  if batch_size < 1 or process_count < 1:
    raise ValueError(f'batch_size ({batch_size}) and process_count '
                     f'({process_count}) must be positive')
  if batch_size % process_count:
    raise ValueError(f'global batch_size {batch_size} is not divisible by '
                     f'process_count {process_count}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} outside '
                     f'[0, {process_count})')
