"""What each training stage's jitted steps actually read (issue 12).

The steps gather their batches on the device from Stage.examples with the
rows of Stage.iterator (train/fused.py); both must be the stage's own
windows. A regression test for a bug that indexed all of split.train with
the rows of the stage's windows, so that under the fresh-prompt protocol SFT
read the first users' windows (fresh ones included) and RL re-read SFT's.
"""
import jax
import numpy as np
import pytest

from vstar_jax.data import pipeline
from vstar_jax.data import splits
from vstar_jax.train import loop


def _epoch_pairs(stage) -> set[tuple[int, int]]:
  """(user, target) of every valid row the stage's steps read in an epoch."""
  examples = splits.Examples(**jax.device_get(stage.examples))
  pairs = set()
  for _ in range(stage.iterator.batches_per_epoch):
    batch = pipeline.take(examples, stage.iterator.next_rows())
    valid = batch['example_mask']
    pairs |= set(zip(batch['user'][valid].tolist(),
                     batch['target'][valid].tolist()))
  return pairs


def _pairs(examples: splits.Examples) -> set[tuple[int, int]]:
  return set(zip(examples.user.tolist(), examples.target.tolist()))


@pytest.mark.parametrize('train_on', ['sft_windows', 'rl_prompts'])
def test_sft_and_rl_steps_read_their_own_windows(smoke_config, tmp_path,
                                                 train_on):
  config = smoke_config(**{'data.fresh_windows': 1, 'stages': 'sft,rl',
                           'sft.train_on': train_on, 'sft.batch_size': 8,
                           'rl.batch_size': 8})
  run = loop.prepare_run(config, str(tmp_path))
  split = run.exp.split
  fresh = _pairs(splits.stage_examples(split, 'rl', fresh_windows=1))
  sft_only = _pairs(splits.stage_examples(split, 'sft', fresh_windows=1))
  assert fresh and sft_only and not fresh & sft_only

  sft_read = _epoch_pairs(loop.sft_stage(run))
  # drop_remainder: an epoch reads all but < one batch of the windows.
  expected = fresh if train_on == 'rl_prompts' else sft_only
  assert sft_read <= expected
  assert len(expected - sft_read) < config.sft.batch_size

  params = run.model.init(jax.random.key(0))
  rl_read = _epoch_pairs(loop.rl_stage(run, params))
  assert rl_read <= fresh
  assert len(fresh - rl_read) < config.rl.batch_size
  if train_on == 'rl_prompts':            # the CE control reads RL's prompts
    np.testing.assert_equal(sorted(sft_read), sorted(rl_read))
