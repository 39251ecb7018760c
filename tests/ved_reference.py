"""Reference implementation (not a test module): a toy policy/value model
and a plain-Python VED, which tests/ved_test.py compares the jitted search to.

The toy model's logits and value are a fixed function of the node's SID
prefix, so the reference can query it for any prefix without caches. The
reference implements VED (vstar_jax.decoding.ved.search, spec section 5)
with Python lists and dicts, one user at a time; it borrows only numeric
primitives (the toy, masked log-softmax, entropy, categorical sampling with
the same keys) so that floating-point results match bit for bit.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vstar_jax.models import policy
from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search


def _prefix_hash(codes, depths):
  """Hash of a prefix given codes at depths 1..d; float32-exact integers."""
  return sum((c + 1) * 7 ** d for c, d in zip(codes, depths) if d >= 1)


def toy_outputs(h, depth, user, vocab, value_scale=1.0):
  """Logits [..., V] and value [...] from prefix hash, depth and user.

  Each user gets a different policy, so batch elements build different trees.
  """
  h = jnp.asarray(h, jnp.float32)
  depth = jnp.asarray(depth, jnp.float32)
  x = h + 1000. * depth + 17. * jnp.asarray(user, jnp.float32)
  v = jnp.arange(vocab, dtype=jnp.float32).reshape((1,) * x.ndim + (vocab,))
  logits = 3. * jnp.sin(0.013 * x[..., None] * (v + 1.) + v)
  value = value_scale * jnp.sin(0.37 * x + 1.1)
  return logits, value


def make_toy_evaluator(vocab, value_scale=1.0, tie_values=False):
  """(evaluator, cache_like) over the toy model; cache = (code, depth).

  The evaluator follows `decoding.types.Evaluator` and ignores params,
  rng_key and the context (the user is the batch row).
  """
  def evaluator(params, rng_key, inputs):
    del params, rng_key
    codes, depths = inputs.codes, inputs.depths
    path_cache, path_mask = inputs.path_cache, inputs.path_mask
    powers = jnp.power(7., path_cache['depth'].astype(jnp.float32))
    contrib = jnp.where(path_mask & (path_cache['depth'] >= 1),
                        (path_cache['code'] + 1.) * powers, 0.)
    own = jnp.where(depths >= 1,
                    (codes + 1.) * jnp.power(7., depths.astype(jnp.float32)),
                    0.)
    h = contrib.sum(-1) + own
    user = jnp.broadcast_to(jnp.arange(codes.shape[0])[:, None], codes.shape)
    logits, value = toy_outputs(h, depths, user, vocab, value_scale)
    if tie_values:
      value = jnp.zeros_like(value)
    return types.EvaluatorOutput(logits=logits, value=value,
                                 cache={'code': codes, 'depth': depths})

  def cache_like(batch):
    return {'code': jnp.zeros((batch, 1), jnp.int32),
            'depth': jnp.zeros((batch, 1), jnp.int32)}
  return evaluator, cache_like


class _Node:

  def __init__(self, code, depth, parent, codes, logp):
    self.code, self.depth, self.parent = code, depth, parent
    self.codes = codes          # tuple of SID codes from the root
    self.logp = logp
    self.children = {}          # code -> slot
    self.visits = 1


def reference_ved(sids, vocab, cfg: search.VedConfig, rng_key, batch,
                  value_scale=1.0, tie_values=False):
  """VED for `batch` users on the toy model. Returns per-user dicts."""
  num_levels = len(next(iter(sids)))
  sid_set = set(map(tuple, sids))
  prefixes = {p[:d] for p in sid_set for d in range(num_levels + 1)}

  def valid_codes(codes):
    if len(codes) == num_levels:
      return np.zeros(vocab, bool)
    return np.array([codes + (c,) in prefixes for c in range(vocab)])

  def evaluate(codes, user):
    depth = len(codes)
    h = _prefix_hash(codes, range(1, depth + 1))
    logits, value = toy_outputs(float(h), depth, user, vocab, value_scale)
    valid = valid_codes(codes)
    child_logp = policy.masked_log_softmax(logits, jnp.asarray(valid))
    entropy = float(search.restricted_entropy(child_logp))
    return (np.asarray(child_logp), 0.0 if tie_values else float(value),
            entropy)

  # The search draws one key per iteration (carry, child sampling, evaluator)
  # and splits the sampling key over users.
  keys = []
  key = rng_key
  max_iters = cfg.max_iters_factor * (cfg.budget - cfg.init_cost(num_levels))
  for _ in range(max_iters):
    key, sample_key, _ = jax.random.split(key, 3)
    keys.append(jax.random.split(sample_key, batch))

  results = []
  for b in range(batch):
    results.append(_reference_one(functools.partial(evaluate, user=b), cfg,
                                  num_levels, vocab, [k[b] for k in keys]))
  return results


def _reference_one(evaluate, cfg, num_levels, vocab, user_keys):
  nodes = []
  stats = []   # (child_logp, value, entropy) per node

  def add(code, depth, parent, codes, logp):
    nodes.append(_Node(code, depth, parent, codes, logp))
    stats.append(evaluate(codes))
    if parent >= 0:
      nodes[parent].children[code] = len(nodes) - 1

  # 1. Init: constrained beam of width B0, every kept node evaluated.
  add(-1, 0, -1, (), 0.0)
  frontier = [0]
  for depth in range(1, num_levels + 1):
    cands = []
    for pos, f in enumerate(frontier):
      child_logp = stats[f][0]
      for c in range(vocab):
        if np.isfinite(child_logp[c]):
          score = np.float32(nodes[f].logp) + child_logp[c]
          cands.append((-float(score), pos * vocab + c, f, c, float(score)))
    cands.sort()
    frontier = []
    for _, _, f, c, score in cands[:cfg.init_beam]:
      add(c, depth, f, nodes[f].codes + (c,), score)
      frontier.append(len(nodes) - 1)

  def prio(i):
    return np.float32(stats[i][1] + np.float32(cfg.lam) * stats[i][2])

  def unexpanded(i):
    child_logp = stats[i][0]
    return [c for c in range(vocab)
            if np.isfinite(child_logp[c]) and c not in nodes[i].children]

  # 2-4. Explore.
  for it in range(len(user_keys)):
    if len(nodes) >= cfg.budget:
      break
    expandable = [i for i in range(len(nodes)) if unexpanded(i)]
    if not expandable:
      continue
    n_root = nodes[0].visits
    def ucb(i):
      bonus = np.float32(cfg.beta) * np.sqrt(
          np.log(np.float32(n_root) + np.float32(1.)) /
          (np.float32(nodes[i].visits) + np.float32(1.)))
      return np.float32(prio(i) + bonus)
    best = max(expandable, key=lambda i: (ucb(i), -i))
    depth = nodes[best].depth
    same = [prio(i) for i in range(len(nodes)) if nodes[i].depth == depth]
    mean = np.float32(np.sum(np.array(same, np.float32), dtype=np.float32) /
                      np.float32(len(same)))
    passes = prio(best) >= mean - 1e-6 * max(1., abs(float(mean)))
    if passes:
      allowed = np.zeros(vocab, bool)
      allowed[unexpanded(best)] = True
      logits = jnp.where(jnp.asarray(allowed),
                         jnp.asarray(stats[best][0]) / cfg.temperature,
                         jnp.finfo(jnp.float32).min)
      code = int(jax.random.categorical(user_keys[it], logits))
      logp = float(np.float32(nodes[best].logp) +
                   np.float32(stats[best][0][code]))
      add(code, depth + 1, best, nodes[best].codes + (code,), logp)
    i = best
    while i >= 0:
      nodes[i].visits += 1
      i = nodes[i].parent

  # 5. Candidates.
  leaves = [i for i in range(len(nodes)) if nodes[i].depth == num_levels]
  leaves.sort(key=lambda i: (-stats[i][1], -nodes[i].logp, i))
  out = [(nodes[i].codes, nodes[i].logp, True) for i in leaves]
  comps = []
  for i in range(len(nodes)):
    if nodes[i].depth == num_levels - 1:
      for c in unexpanded(i):
        comps.append((-float(np.float32(nodes[i].logp) + stats[i][0][c]),
                      i * vocab + c, nodes[i].codes + (c,)))
  comps.sort()
  out += [(codes, -neg, False) for neg, _, codes in comps]
  out = out[:cfg.num_candidates]
  return {
      'nodes': [(n.code, n.depth, n.parent) for n in nodes],
      'visits': [n.visits for n in nodes],
      'candidates': out,
      'cost': len(nodes),
  }


def ucb_bonus(beta, n_root, n):
  return beta * math.sqrt(math.log(n_root + 1) / (n + 1))
