"""N training steps per jitted call: a lax.scan over batches on the device.

A small model on an accelerator is launch-bound: one Python dispatch and one
host-to-device batch copy per step set its floor. Here the training windows
are put on the devices once per stage (replicated; a few MB) and one call runs
N steps as a `lax.scan`. Per call the host hands over only which examples
form the N batches: their indices [N, B] int32 (4 bytes per example instead
of the example), drawn from the same epoch orders as pipeline.BatchIterator,
so the data position stays the iterator's (the step count) and a resumed run
replays the uninterrupted one.

A step is step(state, frozen, batch, consts) -> (state, metrics): `frozen`
is saved with the state but never changed (the RL reference policy),
`consts` are replicated inputs (trie, keys, item embeddings). Per-step keys
are fold_in(base_key, state.step) inside the step, so they do not depend on
N. N=1 calls the step without a scan.

Shapes: N steps per call, B global batch, M examples, T history.
"""
import dataclasses
from typing import Any, Callable

import chex
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from vstar_jax import parallel
from vstar_jax.data import pipeline
from vstar_jax.data import splits

# step(state, frozen, batch, consts) -> (state, metrics dict of scalars)
Step = Callable[[Any, Any, pipeline.Batch, Any], tuple[Any, dict[str, Any]]]


def device_examples(examples: splits.Examples, mesh: jax.sharding.Mesh
                    ) -> dict[str, jax.Array]:
  """The M examples' arrays, replicated over `mesh` (every process has all).

  Returns:
    {'history': [M, T] int32, 'history_mask': [M, T] bool, 'target': [M]
    int32, 'user': [M] int32}.
  """
  return parallel.host_to_global(dataclasses.asdict(examples),
                                 parallel.replicated(mesh))


def rows_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """[N, B] example indices: the batch dimension split over 'data'."""
  return NamedSharding(mesh, P(None, parallel.DATA_AXIS))


def next_rows(iterator: pipeline.BatchIterator, num_steps: int,
              mesh: jax.sharding.Mesh) -> tuple[jax.Array, jax.Array]:
  """The next `num_steps` batches of `iterator` as global index arrays.

  Returns:
    (rows [N, B] int32, valid [N, B] bool), split like rows_sharding; each
    process supplies its own columns (pipeline.batch_rows).
  """
  rows, valid = zip(*(iterator.next_rows() for _ in range(num_steps)))
  sharding = rows_sharding(mesh)
  return (jax.make_array_from_process_local_data(sharding, np.stack(rows)),
          jax.make_array_from_process_local_data(sharding, np.stack(valid)))


def scan_steps(step: Step, num_steps: int, batch_sharding=None) -> Callable:
  """N steps of `step` over batches gathered on the device.

  Args:
    step: one training step (see module doc).
    num_steps: N (static).
    batch_sharding: if given, each gathered batch is constrained to it (the
      rows of a data-parallel step stay on their devices).

  Returns:
    steps(state, frozen, examples, rows [N, B], valid [N, B], consts) ->
    (state after N steps, metrics dict of [N] arrays, one entry per step).
  """
  def one(state, frozen, examples, rows, valid, consts):
    batch = pipeline.take(splits.Examples(**examples), (rows, valid))
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return step(state, frozen, batch, consts)

  def steps(state, frozen, examples, rows, valid, consts):
    chex.assert_shape([rows, valid], (num_steps, None))
    if num_steps == 1:
      state, metrics = one(state, frozen, examples, rows[0], valid[0],
                           consts)
      return state, jax.tree_util.tree_map(lambda m: m[None], metrics)
    return jax.lax.scan(
        lambda carry, xs: one(carry, frozen, examples, *xs, consts),
        state, (rows, valid))

  return steps


def jit_steps(step: Step, num_steps: int, mesh: jax.sharding.Mesh,
              state_sharding, frozen_sharding) -> Callable:
  """jax.jit of scan_steps with the run's shardings; donates the state.

  The state and the frozen tree keep their shardings; examples and consts
  are replicated; the index arrays are split over 'data' (rows_sharding).
  """
  repl = parallel.replicated(mesh)
  rows = rows_sharding(mesh)
  return jax.jit(
      scan_steps(step, num_steps, parallel.batch_sharding(mesh)),
      in_shardings=(state_sharding, frozen_sharding, repl, rows, rows, repl),
      out_shardings=(state_sharding, repl),
      donate_argnums=0)
