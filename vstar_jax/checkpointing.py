"""Orbax checkpoints: the latest N for exact resume, plus the best on validation.

`latest/` holds the whole TrainState plus a JSON item with the host-side
position (data iterator, best-so-far, early-stopping counter), so a resumed
run replays exactly. `best/` holds the parameters with the best validation
metric. Every process calls save/restore (orbax coordinates multi-host).

Orbax writes a step into a temporary directory and renames it when complete,
so a run killed mid-save leaves no half-written step behind. A complete step
whose files were later damaged fails to restore: the previous step is used
and the damaged ones are moved to `corrupt/` beside `latest/`.
"""
import os
import shutil
import uuid
from typing import Any, Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from vstar_jax import errors


class CheckpointError(errors.DataError):
  """No checkpoint of a directory can be restored; one line."""


def _abstract(tree):
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _brief(error: Exception) -> str:
  """First line of an error, without tensorstore's spec dump, <= 200 chars."""
  text = f'{type(error).__name__}: {error}'.splitlines()[0]
  text = text.split(' [tensorstore_spec')[0]
  return text if len(text) <= 200 else text[:197] + '...'


class Checkpointer:
  """Latest-N and best-1 checkpoint managers of one training stage."""

  def __init__(self, directory: str, *, keep: int = 2):
    """`directory` e.g. WORKDIR/checkpoints/sft; holds latest/ and best/."""
    directory = os.path.abspath(directory)
    self.directory = directory
    self.latest = ocp.CheckpointManager(
        os.path.join(directory, 'latest'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False))
    self.best = ocp.CheckpointManager(
        os.path.join(directory, 'best'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False))

  def save(self, step: int, state: Any, meta: dict) -> None:
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                     force=True)
    self.latest.wait_until_finished()

  def restore_latest(self, like_state: Any) -> Optional[tuple[Any, dict]]:
    """(state, meta) of the newest readable checkpoint; None if there is none.

    Raises:
      CheckpointError: there are checkpoints but none restores (nothing is
        moved then: a changed config is likelier than N damaged steps).
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    failed = []
    for step in steps:
      try:
        restored = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(like_state)),
            meta=ocp.args.JsonRestore()))
      # Damaged bytes surface as many types (tensorstore, JSON, OS, value
      # errors); every one means "not this step".
      except Exception as e:  # pylint: disable=broad-exception-caught
        failed.append((step, _brief(e)))
        continue
      if failed:
        self._quarantine(failed, step)
      logging.info('Restored checkpoint at step %d', step)
      return restored.state, restored.meta
    if failed:
      step, error = failed[0]
      raise CheckpointError(
          f'{self.latest.directory}: none of the {len(steps)} checkpoints '
          f'restores (step {step}: {error})')
    return None

  def _quarantine(self, failed: list[tuple[int, str]], used: int) -> None:
    """Moves unreadable steps aside so they are neither reused nor kept."""
    corrupt_dir = os.path.join(self.directory, 'corrupt')
    for step, error in failed:
      logging.warning(
          'Checkpoint %s/%d is corrupt (%s); moved to %s, resuming from step '
          '%d.', self.latest.directory, step, error, corrupt_dir, used)
    if jax.process_index() == 0:
      os.makedirs(corrupt_dir, exist_ok=True)
      for step, _ in failed:
        shutil.move(os.path.join(str(self.latest.directory), str(step)),
                    os.path.join(corrupt_dir, f'{step}-{uuid.uuid4().hex[:8]}'))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('vstar_checkpoint_quarantine')
    self.latest.reload()

  def drop_best_except(self, step: int) -> None:
    """Deletes every best/ step but `step` (-1: all of them).

    A run killed without a SIGTERM (so after its last latest/ save) may have
    saved a best step that the resumed position does not know; the replay
    saves it again, which orbax refuses while the stale step exists.
    """
    for stale in self.best.all_steps():
      if stale != step:
        logging.info('Dropping best checkpoint %d, newer than the resumed '
                     'position', stale)
        self.best.delete(stale)

  def save_best(self, step: int, params: Any, meta: dict) -> None:
    self.best.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
                   force=True)
    self.best.wait_until_finished()

  def restore_best(self, like_params: Any) -> Optional[tuple[Any, dict]]:
    step = self.best.latest_step()
    if step is None:
      return None
    restored = self.best.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(like_params)),
        meta=ocp.args.JsonRestore()))
    return restored.params, restored.meta

  def close(self) -> None:
    self.latest.close()
    self.best.close()
