"""Device meshes and shardings: XLA SPMD does the distribution.

One mesh with axes ('data', 'model'). Batches are split over 'data'; the
parameters and optimizer state are replicated, or (FSDP, `mesh.fsdp=True`)
each large leaf is split over 'data' along its largest divisible dimension
and XLA gathers it where it is used. The 'model' axis is reserved for tensor
parallelism: nothing is split over it yet, so its devices hold replicas.

Every function here runs on the host, outside jit. Multi-host: each process
holds its slice of every global batch (`global_batch`) or the whole of a host
array (`host_to_global`); the mesh lists the devices of all processes in
process order, so process p's rows are the p-th block of the 'data' axis.
"""
import math
from typing import Any, Callable, Optional, Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from vstar_jax import errors

DATA_AXIS = 'data'
MODEL_AXIS = 'model'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None, *, data: int,
              model: int) -> Mesh:
  """The ('data', 'model') mesh over `devices` (default: all devices).

  Args:
    devices: the devices, in process order.
    data: devices on the 'data' axis; -1 takes every device `model` leaves.
    model: devices on the 'model' axis (config.mesh.model).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if model < 1 or n % model:
    raise errors.ConfigError(
        f'config.mesh.model={model} must be a positive divisor of the {n} '
        'devices')
  size = n // model if data == -1 else data
  if size < 1 or size * model != n:
    raise errors.ConfigError(
        f'config.mesh.data={data} x config.mesh.model={model} must equal '
        f'the {n} devices (-1: all remaining)')
  return Mesh(np.asarray(devices).reshape(size, model),
              (DATA_AXIS, MODEL_AXIS))


def data_size(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data'; other dims whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(mesh: Mesh, batch_size: int, field: str) -> None:
  """ConfigError unless the global batch divides over the 'data' axis."""
  n = data_size(mesh)
  if batch_size % n:
    raise errors.ConfigError(
        f'config.{field}={batch_size} is not divisible by the {n} devices of '
        'the data axis (config.mesh.data)')
  if batch_size % jax.process_count():
    raise errors.ConfigError(
        f'config.{field}={batch_size} is not divisible by the '
        f'{jax.process_count()} processes')


def fsdp_spec(shape: Sequence[int], axis_size: int, min_size: int) -> P:
  """Split the largest dimension divisible by axis_size; P() if none/small.

  Ties go to the later dimension (the output features of a kernel).
  """
  if math.prod(shape) < min_size or axis_size == 1:
    return P()
  best = None
  for dim, size in enumerate(shape):
    if size % axis_size == 0 and (best is None or size >= shape[best]):
      best = dim
  if best is None:
    return P()
  return P(*([None] * best + [DATA_AXIS]))


def tree_shardings(mesh: Mesh, abstract_tree: Any, *, fsdp: bool,
                   fsdp_min_size: int) -> Any:
  """NamedShardings for a pytree of arrays / ShapeDtypeStructs.

  The rule depends on a leaf's shape only, so optimizer moments get the
  sharding of their parameter. With FSDP, leaves of fewer than
  `fsdp_min_size` elements stay replicated: gathering them costs more
  latency than their memory is worth.
  """
  def one(leaf):
    if not fsdp:
      return replicated(mesh)
    return NamedSharding(mesh, fsdp_spec(leaf.shape, data_size(mesh),
                                         fsdp_min_size))
  return jax.tree_util.tree_map(one, abstract_tree)


def create_sharded(fn: Callable[..., Any], shardings_of: Callable[[Any], Any],
                   *args) -> tuple[Any, Any]:
  """Runs fn(*args) straight into its shardings; no full copy on one device.

  Args:
    fn: pure function (e.g. parameter init or TrainState.create).
    shardings_of: abstract output -> pytree of shardings.
    *args: fn's arguments.

  Returns:
    (output, its shardings).
  """
  shardings = shardings_of(jax.eval_shape(fn, *args))
  return jax.jit(fn, out_shardings=shardings)(*args), shardings


def global_batch(local: dict[str, np.ndarray], mesh: Mesh
                 ) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays split over 'data'.

  Args:
    local: arrays [b, ...] with b = B / process_count rows each: this
      process's contiguous block of the global batch (pipeline.batches).

  Returns:
    Arrays [B, ...] sharded by batch_sharding(mesh).
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}


def host_to_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Host values that every process holds in full -> global arrays.

  Each process transfers only the pieces its own devices hold. Typed PRNG
  keys are moved as their key data.
  """
  def one(x):
    if jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree_util.tree_map(one, tree)
