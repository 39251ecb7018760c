"""Reference constrained beam search in the style of PyTorch SID projects.

MiniOneRec (through Hugging Face `generate` with `prefix_allowed_tokens_fn`)
and TIGER re-implementations keep the catalogue as a Python dict from a SID
prefix to its allowed next codes and consult it on the host for every beam
at every step, around a model step on the accelerator. This module does the
same around our jitted decode step, for the benchmark's comparison:

  per level: one jitted call (reorder the beams' KV caches, decode the new
  tokens) -> logits to host -> a numpy -inf mask filled row by row from the
  dict -> masked log-softmax, beam scores, top-K over K x V on host.

Scores are log-probabilities renormalised over the allowed codes, as in
`decoding.beam`, so both searches rank the same items. Our device search
replaces the dict with a gather from the `PrefixTrie` tables inside one
jitted program.

Shapes: B users, K beams, L levels, V codes, T history.
"""
import time

import jax
import numpy as np

from vstar_jax.decoding import incremental
from vstar_jax.models import policy


def build_dict_trie(codes: np.ndarray):
  """Python dicts of a catalogue's SIDs.

  Args:
    codes: [N, L] int SID codes, unique rows.

  Returns:
    (allowed, items): allowed maps every prefix tuple of length 0..L-1 to an
    int64 array of its allowed next codes (sorted); items maps a full SID
    tuple to its item index.
  """
  allowed_sets = {}
  items = {}
  for item, sid in enumerate(codes.tolist()):
    for level in range(len(sid)):
      allowed_sets.setdefault(tuple(sid[:level]), set()).add(sid[level])
    items[tuple(sid)] = item
  allowed = {prefix: np.array(sorted(s), np.int64)
             for prefix, s in allowed_sets.items()}
  return allowed, items


class HostTrieBeamSearch:
  """Beam search with host-side dict-trie masking; see the module docstring.

  Call it with (params, history [B, T] int32 numpy, history_mask [B, T] bool
  numpy); it returns numpy (items [B, K] int32, -1 for a dead beam;
  scores [B, K] float32). `seconds` accumulates, over calls, the time spent
  waiting for the device ('device': jitted calls and transfers) and on the
  host ('mask': the per-beam dict lookups; 'select': softmax, top-K and the
  new prefixes).
  """

  def __init__(self, net: policy.PolicyValueNet, codes: np.ndarray, *,
               beam_width: int):
    self.net = net
    self.codes = np.asarray(codes, np.int32)
    self.beam_width = beam_width
    self.allowed, self.items = build_dict_trie(self.codes)
    self._prefill = jax.jit(self._prefill_fn)
    self._step = jax.jit(self._step_fn)
    self.seconds = {'device': 0., 'mask': 0., 'select': 0.}

  def _prefill_fn(self, params, hist_codes, history_mask, history):
    """History encoding and the BOS token: logits [B, 1, V], path caches."""
    context = self.net.apply({'params': params}, hist_codes, history_mask,
                             with_value=False, history_items=history,
                             method=self.net.encode_history)
    logits, paths = incremental.start(self.net, params, context)
    return context, logits, paths

  def _step_fn(self, params, context, paths, parent, code):
    """Reorders caches to the chosen beams, decodes their new tokens."""
    return incremental.extend(self.net, params, context,
                              incremental.select(paths, parent), code)

  def _mask(self, prefixes, vocab_size):
    """[R, V] float32: 0 where the dict allows a code, -inf elsewhere."""
    mask = np.full((len(prefixes), vocab_size), -np.inf, np.float32)
    for row, prefix in enumerate(prefixes):
      allowed = self.allowed.get(prefix)
      if allowed is not None:
        mask[row, allowed] = 0.
    return mask

  def __call__(self, params, history, history_mask):
    batch = history.shape[0]
    width = self.beam_width
    num_levels = self.codes.shape[1]
    hist_codes = self.codes[np.maximum(history, 0)]
    context, logits, paths = self._prefill(
        params, jax.device_put(hist_codes), jax.device_put(history_mask),
        jax.device_put(history))
    prefixes = [()] * batch                    # one root beam per user
    scores = np.zeros((batch, 1), np.float32)
    for level in range(num_levels):
      start = time.perf_counter()
      logits = np.asarray(jax.device_get(logits), np.float32)  # [B, k, V]
      _, beams, vocab = logits.shape
      self.seconds['device'] += time.perf_counter() - start
      start = time.perf_counter()
      mask = self._mask(prefixes, vocab)
      self.seconds['mask'] += time.perf_counter() - start
      start = time.perf_counter()
      masked = logits.reshape(-1, vocab) + mask
      logp = _log_softmax(masked).reshape(batch, beams, vocab)
      cand = (scores[:, :, None] + logp).reshape(batch, -1)
      if cand.shape[1] < width:   # tiny vocabularies: pad with dead beams
        cand = np.pad(cand, ((0, 0), (0, width - cand.shape[1])),
                      constant_values=-np.inf)
      flat = _top_k(cand, width)                       # [B, K]
      scores = np.take_along_axis(cand, flat, axis=1)
      parent = np.minimum(flat // vocab, beams - 1)
      code = (flat % vocab).astype(np.int32)
      prefixes = [
          prefixes[b * beams + parent[b, j]] + (int(code[b, j]),)
          if np.isfinite(scores[b, j]) else None
          for b in range(batch) for j in range(width)]
      self.seconds['select'] += time.perf_counter() - start
      if level == num_levels - 1:
        break
      logits, paths = self._step(
          params, context, paths, jax.device_put(parent.astype(np.int32)),
          jax.device_put(code))
    items = np.array([-1 if p is None else self.items[p] for p in prefixes],
                     np.int32).reshape(batch, width)
    return items, scores


def _log_softmax(x: np.ndarray) -> np.ndarray:
  """Row-wise log-softmax; rows that are all -inf stay -inf."""
  top = x.max(axis=-1, keepdims=True)
  safe_top = np.where(np.isfinite(top), top, 0.)
  with np.errstate(divide='ignore', invalid='ignore'):
    lse = np.log(np.exp(x - safe_top).sum(-1, keepdims=True)) + safe_top
    return np.where(np.isfinite(top), x - lse, -np.inf)


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
  """Indices of each row's k largest values, best first; among the chosen,
  ties go to the lower index (as lax.top_k)."""
  part = np.argpartition(-x, k - 1, axis=1)[:, :k]
  vals = np.take_along_axis(x, part, axis=1)
  order = np.lexsort((part, -vals), axis=1)
  return np.take_along_axis(part, order, axis=1)
