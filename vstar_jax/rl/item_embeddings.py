"""Item embeddings e(i) for the dense step reward of the value model.

`spec` chooses the source:
  * 'text': the MiniLM encoder over each item's text (cached on disk);
  * 'attributes:PATH': L2-normalised multi-hot vectors of item attribute ids
    from a JSON {item_id: [attr, ...]} (e.g. Beauty's S3-Rec attributes,
    which has no item text);
  * a '.npy' path: a precomputed [N, D] array in the dataset's item order.
"""
import numpy as np

from vstar_jax import errors
from vstar_jax.data import dataset as dataset_lib
from vstar_jax.data import files


def _normalise(x: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def load_item_embeddings(spec: str, ds: dataset_lib.Dataset,
                         cache_dir: str) -> np.ndarray:
  """[N, D] float32 unit vectors in the dataset's item order."""
  if spec == 'text':
    # The same embeddings (and cache) as the SID tokenizer's.
    from vstar_jax.sid import build  # pylint: disable=g-import-not-at-top
    return build.dataset_embeddings(ds, cache_dir=cache_dir).astype(
        np.float32)
  if spec.startswith('attributes:'):
    path = spec.split(':', 1)[1]
    raw = files.read_json_object(path)
    missing = [item for item in ds.item_ids if item not in raw]
    if missing:
      raise errors.DataError(f'{path}: item {missing[0]!r}: no attributes '
                            f'({len(missing)} items missing)')
    attrs = sorted({int(a) for item in ds.item_ids for a in raw[item]})
    col = {a: j for j, a in enumerate(attrs)}
    out = np.zeros((ds.num_items, len(attrs)), np.float32)
    for i, item in enumerate(ds.item_ids):
      out[i, [col[int(a)] for a in raw[item]]] = 1.0
    return _normalise(out)
  if spec.endswith('.npy'):
    arr = np.load(spec)
    if arr.ndim != 2 or arr.shape[0] != ds.num_items:
      raise errors.DataError(f'{spec}: shape {arr.shape}, expected '
                            f'[{ds.num_items}, D]')
    return _normalise(arr)
  raise errors.DataError(f"config.rl.item_embeddings={spec!r}: expected "
                        "'text', 'attributes:PATH' or a .npy path")
