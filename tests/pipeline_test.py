"""Tests for vstar_jax.data.pipeline: shapes, determinism, sharding, resume."""
import itertools
import json
import pathlib

import numpy as np
import pytest

from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import pipeline
from vstar_jax.data import splits

REPO = pathlib.Path(__file__).resolve().parents[1]
KEYS = ('history', 'history_mask', 'target', 'user', 'example_mask')


@pytest.fixture(scope='module')
def examples():
  ds = dataset_lib.load_dataset(REPO / 'testdata/synthetic', 'toy')
  return splits.leave_one_out_split(ds, max_history=6).train  # 135 examples


def _epoch(examples, **kwargs):
  defaults = dict(batch_size=16, seed=3, epoch=0, shuffle=True,
                  drop_remainder=False)
  return list(pipeline.batches(examples, **{**defaults, **kwargs}))


def _row_ids(examples, batch):
  """Index of each batch row in examples, matched on its full content."""
  table = {(tuple(h), t, u): i for i, (h, t, u) in enumerate(zip(
      examples.history.tolist(), examples.target.tolist(),
      examples.user.tolist()))}
  return [table[(tuple(h), t, u)] for h, t, u in zip(
      batch['history'].tolist(), batch['target'].tolist(),
      batch['user'].tolist())]


def test_shapes_and_dtypes_are_fixed(examples):
  batches = _epoch(examples)
  assert len(batches) == 9 == pipeline.num_batches(
      135, batch_size=16, drop_remainder=False)
  for batch in batches:
    assert set(batch) == set(KEYS)
    assert batch['history'].shape == (16, 6)
    assert batch['history'].dtype == np.int32
    assert batch['history_mask'].shape == (16, 6)
    assert batch['history_mask'].dtype == bool
    for key, dtype in (('target', np.int32), ('user', np.int32),
                       ('example_mask', bool)):
      assert batch[key].shape == (16,) and batch[key].dtype == dtype


def test_epoch_covers_every_example_once_and_pads_the_last(examples):
  batches = _epoch(examples)
  masks = np.concatenate([b['example_mask'] for b in batches])
  assert masks.sum() == 135 and not masks[135:].any()
  seen = [i for b in batches
          for i, m in zip(_row_ids(examples, b), b['example_mask']) if m]
  assert sorted(seen) == list(range(135))
  # Padding rows are copies of real examples: real history, real target.
  last = batches[-1]
  pad = ~last['example_mask']
  assert pad.sum() == 9
  assert last['history_mask'][pad, -1].all()
  assert (last['target'][pad] >= 0).all()


def test_drop_remainder(examples):
  batches = _epoch(examples, drop_remainder=True)
  assert len(batches) == 8
  assert all(b['example_mask'].all() for b in batches)


def test_order_depends_only_on_seed_and_epoch(examples):
  first = _epoch(examples, epoch=1)
  again = _epoch(examples, epoch=1)
  for a, b in zip(first, again):
    for key in KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  other_epoch = _epoch(examples, epoch=2)
  other_seed = _epoch(examples, epoch=1, seed=4)
  ids = _row_ids(examples, first[0])
  assert ids != _row_ids(examples, other_epoch[0])
  assert ids != _row_ids(examples, other_seed[0])


def test_no_shuffle_keeps_dataset_order(examples):
  batches = _epoch(examples, shuffle=False)
  assert _row_ids(examples, batches[0]) == list(range(16))
  # The padded tail wraps to the start of the (unshuffled) order.
  assert _row_ids(examples, batches[-1]) == list(range(128, 135)) + list(
      range(9))


@pytest.mark.parametrize('drop_remainder', [False, True])
def test_process_slices_concatenate_to_the_global_batch(
    examples, drop_remainder):
  single = _epoch(examples, drop_remainder=drop_remainder)
  shards = [_epoch(examples, drop_remainder=drop_remainder, process_index=p,
                   process_count=2) for p in range(2)]
  assert len(shards[0]) == len(shards[1]) == len(single)
  for whole, part0, part1 in zip(single, *shards):
    assert part0['target'].shape == (8,)
    for key in KEYS:
      np.testing.assert_array_equal(
          whole[key], np.concatenate([part0[key], part1[key]]))


def test_bad_sharding_arguments(examples):
  with pytest.raises(ValueError, match='not divisible by process_count 3'):
    _epoch(examples, process_count=3)
  with pytest.raises(ValueError, match='process_index 2 outside'):
    _epoch(examples, process_index=2, process_count=2)


def test_start_batch_skips_within_an_epoch(examples):
  full = _epoch(examples)
  tail = _epoch(examples, start_batch=5)
  assert len(tail) == 4
  for a, b in zip(full[5:], tail):
    np.testing.assert_array_equal(a['target'], b['target'])


def test_iterator_resumes_exactly_across_epochs(examples):
  def make():
    return pipeline.BatchIterator(examples, batch_size=32, seed=9,
                                  shuffle=True, drop_remainder=False)

  reference = [b['target'] for b in itertools.islice(make(), 12)]
  it = make()
  assert it.batches_per_epoch == 5
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.state()))
  assert state == {'epoch': 1, 'batch_in_epoch': 2}
  resumed = make()
  resumed.restore(state)
  for expected in reference[7:]:
    np.testing.assert_array_equal(next(resumed)['target'], expected)
  # Epoch e of the iterator is exactly batches(..., epoch=e).
  epoch1 = _epoch(examples, batch_size=32, seed=9, epoch=1)
  for expected, batch in zip(reference[5:10], epoch1):
    np.testing.assert_array_equal(batch['target'], expected)


def test_iterator_state_at_epoch_end_restores(examples):
  it = pipeline.BatchIterator(examples, batch_size=64, seed=0, shuffle=True,
                              drop_remainder=True)
  next(it), next(it)
  assert it.state() == {'epoch': 0, 'batch_in_epoch': 2}
  following = next(it)['target']
  resumed = pipeline.BatchIterator(examples, batch_size=64, seed=0,
                                   shuffle=True, drop_remainder=True)
  resumed.restore({'epoch': 0, 'batch_in_epoch': 2})
  np.testing.assert_array_equal(next(resumed)['target'], following)
  with pytest.raises(ValueError, match='invalid iterator state'):
    resumed.restore({'epoch': 0, 'batch_in_epoch': 3})


def test_iterator_rejects_empty_epochs(examples):
  with pytest.raises(ValueError, match='give no batch of 256'):
    pipeline.BatchIterator(examples, batch_size=256, seed=0, shuffle=False,
                           drop_remainder=True)
