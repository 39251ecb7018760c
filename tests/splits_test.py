"""Tests for vstar_jax.data.splits (leave-one-out and chronological)."""
import dataclasses
import json
import pathlib
import types

import jax
import numpy as np
import pytest

from vstar_jax import errors
from vstar_jax import parallel
from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import pipeline
from vstar_jax.data import splits

REPO = pathlib.Path(__file__).resolve().parents[1]
PAD = splits.PAD_ITEM_IDX


@pytest.fixture(scope='module')
def toy():
  return dataset_lib.load_dataset(REPO / 'testdata/synthetic', 'toy')


@pytest.fixture(scope='module')
def movielens():
  return dataset_lib.load_dataset(REPO / 'testdata/movielens',
                                  'ml-latest-small')


def _reference(windows, max_history):
  """Examples built one at a time from (user, seq, target position)."""
  history, mask, target, user = [], [], [], []
  for u, seq, t in windows:
    past = list(seq[max(0, t - max_history):t])
    pad = max_history - len(past)
    history.append([PAD] * pad + past)
    mask.append([False] * pad + [True] * len(past))
    target.append(seq[t])
    user.append(u)
  return history, mask, target, user


def _assert_examples(examples, windows, max_history):
  history, mask, target, user = _reference(windows, max_history)
  np.testing.assert_array_equal(examples.history, np.array(
      history, np.int32).reshape(-1, max_history))
  np.testing.assert_array_equal(examples.history_mask, np.array(
      mask, bool).reshape(-1, max_history))
  np.testing.assert_array_equal(examples.target, target)
  np.testing.assert_array_equal(examples.user, user)
  assert examples.history.dtype == np.int32
  assert examples.history_mask.dtype == bool
  assert examples.target.dtype == np.int32 and examples.user.dtype == np.int32


@pytest.mark.parametrize('max_history', [20, 2])
def test_leave_one_out_matches_reference(toy, max_history):
  split = splits.leave_one_out_split(toy, max_history=max_history)
  seqs = [s.tolist() for s in toy.sequences]
  train = [(u, s, t) for u, s in enumerate(seqs) for t in range(1, len(s) - 2)]
  _assert_examples(split.train, train, max_history)
  _assert_examples(split.valid, [(u, s, len(s) - 2)
                                 for u, s in enumerate(seqs)], max_history)
  _assert_examples(split.test, [(u, s, len(s) - 1)
                                for u, s in enumerate(seqs)], max_history)
  assert split.protocol == 'leave_one_out'
  assert (len(split.train), len(split.valid), len(split.test)) == (135, 30, 30)
  assert split.train.max_history == max_history


def test_leave_one_out_has_no_target_leak(toy):
  split = splits.leave_one_out_split(toy)
  for u, seq in enumerate(toy.sequences):
    assert len(set(seq.tolist())) == len(seq)  # toy users never repeat
    train_targets = set(split.train.target[split.train.user == u].tolist())
    held_out = {int(seq[-1]), int(seq[-2])}
    assert not train_targets & held_out
    # Neither held-out item is in a training history either.
    train_hist = split.train.history[split.train.user == u]
    assert not set(train_hist.ravel().tolist()) & held_out
    # The validation history never contains the test target.
    assert int(seq[-1]) not in split.valid.history[u].tolist()


def test_histories_are_right_aligned_and_non_empty(toy):
  for examples in (splits.leave_one_out_split(toy, max_history=5).train,
                   splits.chronological_split(toy, max_history=5).test):
    mask = examples.history_mask
    assert mask[:, -1].all()  # the most recent item sits in the last column
    # Once valid, every column to the right is valid (a suffix).
    assert (np.diff(mask.astype(np.int8), axis=1) >= 0).all()
    assert (examples.history[~mask] == PAD).all()
    assert (examples.history[mask] >= 0).all()


def test_leave_one_out_rejects_short_user(tmp_path):
  (tmp_path / 'ds.inter.json').write_text(json.dumps(
      {'0': [0, 1, 2], 'short': [1, 2]}))
  ds = dataset_lib.load_dataset(tmp_path, 'ds')
  with pytest.raises(errors.DataError) as info:
    splits.leave_one_out_split(ds)
  message = str(info.value)
  assert 'ds.inter.json' in message and "user 'short'" in message
  assert 'has 2 interactions' in message and 'at least 3' in message


def test_chronological_matches_reference(toy):
  split = splits.chronological_split(toy)
  windows = sorted(
      ((int(toy.timestamps[u][t]), u, t)
       for u, s in enumerate(toy.sequences) for t in range(1, len(s))))
  assert len(windows) == 195
  seqs = [s.tolist() for s in toy.sequences]
  ref = [(u, seqs[u], t) for _, u, t in windows]
  assert (len(split.train), len(split.valid), len(split.test)) == (156, 19, 20)
  _assert_examples(split.train, ref[:156], 10)
  _assert_examples(split.valid, ref[156:175], 10)
  _assert_examples(split.test, ref[175:], 10)
  assert split.protocol == 'chronological'


def test_chronological_needs_timestamps(tmp_path):
  (tmp_path / 'ds.inter.json').write_text(json.dumps({'0': [0, 1, 2]}))
  ds = dataset_lib.load_dataset(tmp_path, 'ds')
  with pytest.raises(errors.DataError,
                     match=r'ds.inter.json: chronological split needs '
                     r'timestamps but ds.time.json\[.gz\] was not found'):
    splits.chronological_split(ds)


def test_movielens_split_sizes_and_time_order(movielens):
  loo = splits.leave_one_out_split(movielens)
  assert (len(loo.train), len(loo.valid), len(loo.test)) == (88059, 671, 671)
  chrono = splits.chronological_split(movielens)
  num = 90072 - 671
  assert (len(chrono.train), len(chrono.valid), len(chrono.test)) == (
      int(num * .8), int(num * .9) - int(num * .8), num - int(num * .9))
  # Recover each window's target time: the time of the target item in the
  # user's sequence (MovieLens users never repeat an item).
  time_of = [dict(zip(s.tolist(), t.tolist()))
             for s, t in zip(movielens.sequences, movielens.timestamps)]
  times = np.array([time_of[u][i] for part in (chrono.train, chrono.valid,
                                               chrono.test)
                    for u, i in zip(part.user.tolist(), part.target.tolist())])
  assert (np.diff(times) >= 0).all()
  assert times[len(chrono.train)] > times[0]


def test_scientific_leave_one_out_counts(shared_data):
  ds = dataset_lib.load_dataset(shared_data / 'amazon_scientific',
                                'Scientific')
  split = splits.leave_one_out_split(ds)
  assert (len(split.train), len(split.valid), len(split.test)) == (
      33541, 8317, 8317)


def test_beauty_leave_one_out_counts(shared_data):
  ds = dataset_lib.load_dataset(shared_data / 'amazon_beauty', 'Beauty')
  split = splits.leave_one_out_split(ds)
  assert (len(split.train), len(split.valid), len(split.test)) == (
      131413, 22363, 22363)


# Fresh-prompt protocol (config.data.fresh_windows).

_SHARED = [('amazon_scientific', 'Scientific'), ('amazon_beauty', 'Beauty'),
           ('movielens_latest_small', 'ml-latest-small')]


@pytest.mark.parametrize('k', [1, 2])
def test_fresh_windows_match_reference(toy, k):
  split = splits.leave_one_out_split(toy, max_history=4)
  seqs = [s.tolist() for s in toy.sequences]
  sft = [(u, s, t) for u, s in enumerate(seqs) for t in range(1, len(s) - 2)
         if t < len(s) - 2 - k]
  fresh = [(u, s, t) for u, s in enumerate(seqs) for t in range(1, len(s) - 2)
           if t >= len(s) - 2 - k]
  _assert_examples(splits.stage_examples(split, 'sft', fresh_windows=k),
                   sft, 4)
  _assert_examples(splits.stage_examples(split, 'rl', fresh_windows=k),
                   fresh, 4)
  assert len(fresh) == sum(min(k, len(s) - 3) for s in seqs)
  assert any(len(s) - 3 < k for s in seqs)   # users with fewer windows


def test_default_is_the_original_protocol(toy):
  split = splits.leave_one_out_split(toy)
  for stage in ('sft', 'rl'):
    assert splits.stage_examples(split, stage) is split.train
  # Replaying SFT windows: RL reads every training window again.
  assert splits.stage_examples(split, 'rl', fresh_windows=1,
                               replay_sft_windows=True) is split.train


def _windows_before_validation(seqs, max_history):
  """Reference training windows from each sequence cut before its
  validation item: they cannot contain a validation or test target."""
  history, target, user = [], [], []
  for u, seq in enumerate(seqs):
    seen = np.concatenate([np.full(max_history, PAD), seq[:-2]])
    rows = np.lib.stride_tricks.sliding_window_view(seen, max_history + 1)
    rows = rows[1:]                  # row t: target seq[t], t >= 1
    history.append(rows[:, :-1])
    target.append(rows[:, -1])
    user.append(np.full(len(rows), u))
  return (np.concatenate(history), np.concatenate(target),
          np.concatenate(user))


@pytest.mark.parametrize('directory,name', _SHARED)
def test_fresh_split_on_shared_data(shared_data, directory, name):
  ds = dataset_lib.load_dataset(shared_data / directory, name)
  split = splits.leave_one_out_split(ds)
  history, target, user = _windows_before_validation(ds.sequences, 20)
  old = (len(split.train), split.valid, split.test)
  for k in (1, 3):
    mask = splits.fresh_mask(split, k)
    sft = splits.stage_examples(split, 'sft', fresh_windows=k)
    pool = splits.stage_examples(split, 'rl', fresh_windows=k)
    # No leak: every SFT and RL window is a window of the sequence cut
    # before its validation item, at the same place.
    for part, rows in ((sft, ~mask), (pool, mask)):
      np.testing.assert_array_equal(part.history, history[rows])
      np.testing.assert_array_equal(part.target, target[rows])
      np.testing.assert_array_equal(part.user, user[rows])
      np.testing.assert_array_equal(part.history_mask, history[rows] != PAD)
    # SFT + pool = the old training windows, each exactly once.
    assert len(sft) + len(pool) == len(split.train) == len(target)
    # The pool: each user's last min(k, n - 3) windows, the last one
    # ending just before the validation item.
    lengths = np.array([len(s) for s in ds.sequences])
    np.testing.assert_array_equal(np.bincount(pool.user, minlength=len(
        lengths)), np.minimum(k, lengths - 3))
    last = np.flatnonzero(np.r_[pool.user[1:] != pool.user[:-1], True])
    np.testing.assert_array_equal(
        pool.target[last], [ds.sequences[u][-3] for u in pool.user[last]])
    np.testing.assert_array_equal(
        pool.history[last, -1], [ds.sequences[u][-4]
                                 for u in pool.user[last]])
    # k + 1 withholds one more window of each user that has one left.
    assert (splits.fresh_mask(split, k + 1).sum() - mask.sum() ==
            (lengths - 3 > k).sum())
  assert (len(split.train), split.valid, split.test) == old


def test_fresh_windows_errors(toy):
  loo = splits.leave_one_out_split(toy)
  with pytest.raises(ValueError, match='fresh_windows=-1: must be >= 0'):
    splits.stage_examples(loo, 'sft', fresh_windows=-1)
  with pytest.raises(ValueError, match='needs the leave_one_out protocol'):
    splits.stage_examples(splits.chronological_split(toy), 'rl',
                          fresh_windows=1)
  with pytest.raises(ValueError, match=r"config.sft.train_on='fresh'"):
    splits.stage_examples(loo, 'sft', sft_train_on='fresh')


@pytest.mark.parametrize('replay', [False, True])
def test_ce_control_reads_the_rl_prompts(toy, smoke_config, replay):
  """stages=sft with sft.train_on='rl_prompts' draws RL's batches."""
  from vstar_jax.train import loop   # pylint: disable=g-import-not-at-top
  split = splits.leave_one_out_split(toy)
  config = smoke_config(**{
      'data.fresh_windows': 2, 'rl.replay_sft_windows': replay,
      'sft.batch_size': 16, 'rl.batch_size': 16})
  rl = loop.stage_examples(config, split, 'rl')
  pool = sum(min(2, len(s) - 3) for s in toy.sequences)
  assert len(rl) == (len(split.train) if replay else pool)
  # What the jitted steps read of a run (its windows on the device, indexed
  # by its iterator's rows): the CE control reads RL's batches in order.
  ce_run = types.SimpleNamespace(
      config=dataclasses.replace(config, sft=dataclasses.replace(
          config.sft, train_on='rl_prompts')),
      exp=types.SimpleNamespace(split=split),
      mesh=parallel.make_mesh(data=-1, model=1))
  ce_examples, ce_batches = loop._stage_data(ce_run, 'sft')
  rl_examples, rl_batches = loop._stage_data(ce_run, 'rl')
  ce_examples = splits.Examples(**jax.device_get(ce_examples))
  rl_examples = splits.Examples(**jax.device_get(rl_examples))
  for _ in range(2 * ce_batches.batches_per_epoch + 1):   # across epochs
    ce = pipeline.take(ce_examples, ce_batches.next_rows())
    prompts = pipeline.take(rl_examples, rl_batches.next_rows())
    for key in ce:
      np.testing.assert_array_equal(ce[key], prompts[key])
  sft = loop.stage_examples(config, split, 'sft')
  assert config.sft.train_on == 'sft_windows'
  assert len(sft) == len(split.train) - pool
  # An unknown value (parse rejects it first) is a one-line ConfigError.
  fresh = dataclasses.replace(config, sft=dataclasses.replace(
      config.sft, train_on='fresh'))
  with pytest.raises(errors.ConfigError, match='config.sft.train_on'):
    loop.stage_examples(fresh, split, 'sft')
