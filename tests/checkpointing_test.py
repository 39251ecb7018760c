"""Checkpointer: a damaged newest step falls back to the previous one."""
import pathlib

from absl.testing import absltest
import jax.numpy as jnp
import pytest

from vstar_jax import checkpointing


def _state(v):
  return {'w': jnp.full((16, 8), v), 'b': jnp.arange(3.) * v}


def _corrupt_data(step_dir: pathlib.Path):
  data = [f for f in step_dir.glob('state/**/d/*') if f.is_file()]
  assert data
  for f in data:
    with open(f, 'r+b') as fh:
      fh.truncate(3)


def _remove_meta(step_dir: pathlib.Path):
  (step_dir / 'meta' / 'metadata').unlink()


@pytest.mark.parametrize('damage', [_corrupt_data, _remove_meta])
def test_damaged_latest_falls_back_to_previous(tmp_path, damage):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, _state(float(step)), {'step': step})
  ckpt.close()
  damage(tmp_path / 'latest' / '3')
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  with absltest.mock.patch.object(checkpointing.logging, 'warning') as warn:
    state, meta = ckpt.restore_latest(_state(0.))
  assert meta == {'step': 2}
  assert float(state['w'][0, 0]) == 2.0
  assert warn.call_count == 1
  message = warn.call_args[0][0] % warn.call_args[0][1:]
  assert '\n' not in message and len(message) < 500
  assert f'{tmp_path}/latest/3 is corrupt' in message
  assert 'resuming from step 2' in message
  # Moved aside, so the step can be written again and is not restored.
  assert ckpt.latest.all_steps() == [1, 2]
  assert [p.name[:2] for p in (tmp_path / 'corrupt').iterdir()] == ['3-']
  ckpt.save(3, _state(3.), {'step': 3})
  assert ckpt.restore_latest(_state(0.))[1] == {'step': 3}
  ckpt.close()


def test_all_unreadable_is_one_line_error_and_moves_nothing(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(1, _state(1.), {'step': 1})
  # A different structure (e.g. a changed config) restores from no step.
  with pytest.raises(checkpointing.CheckpointError) as e:
    ckpt.restore_latest({'w': jnp.zeros((4, 4))})
  assert '\n' not in str(e.value)
  assert str(e.value).startswith(
      f'{tmp_path}/latest: none of the 1 checkpoints restores (step 1: ')
  assert ckpt.latest.all_steps() == [1]
  assert not (tmp_path / 'corrupt').exists()
  ckpt.close()


def test_no_checkpoint_is_none(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.restore_latest(_state(0.)) is None
  ckpt.close()
