"""Preemption notices: SIGTERM asks the training loop to save and stop.

Single process: `install()` (called by launch binaries, never at import)
turns SIGTERM into a flag that the host loop reads after every step. Several
processes: JAX's preemption service (started by jax.distributed.initialize)
catches SIGTERM on any host and agrees with the others on one step at which
all of them save, since a checkpoint is a collective operation.
"""
import signal

import jax
from jax.experimental import multihost_utils

_requested = False


def _on_signal(signum, frame) -> None:
  del signum, frame
  global _requested
  _requested = True


def install() -> None:
  """Route SIGTERM to the loop (single process only; see module doc)."""
  if jax.process_count() == 1:
    signal.signal(signal.SIGTERM, _on_signal)


def reached(step: int) -> bool:
  """True when the loop should checkpoint `step` and stop.

  Call it after every step, on every process, with the same step numbers.
  """
  if jax.process_count() > 1:
    return multihost_utils.reached_preemption_sync_point(step)
  return _requested
