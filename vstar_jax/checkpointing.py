"""Orbax checkpoints: the latest N for exact resume, plus the best on validation.

`latest/` holds the whole TrainState plus a JSON item with the host-side
position (data iterator, best-so-far, early-stopping counter), so a resumed
run replays exactly. `best/` holds the parameters with the best validation
metric. Every process calls save/restore (orbax coordinates multi-host).
"""
import os
from typing import Any, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp


def _abstract(tree):
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Latest-N and best-1 checkpoint managers of one training stage."""

  def __init__(self, directory: str, *, keep: int = 2):
    """`directory` e.g. WORKDIR/checkpoints/sft; holds latest/ and best/."""
    directory = os.path.abspath(directory)
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
    """(state, meta) of the newest checkpoint, or None when there is none."""
    step = self.latest.latest_step()
    if step is None:
      return None
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(like_state)),
        meta=ocp.args.JsonRestore()))
    logging.info('Restored checkpoint at step %d', step)
    return restored.state, restored.meta

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
