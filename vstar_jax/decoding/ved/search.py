"""Value-Guided Efficient Decoding (VED, spec section 5, Eq. 10-14).

Under a budget of `budget` decoder tokens per user (Eq. 10), VED builds a tree
of evaluated SID prefixes and returns G candidate items:

1. Init: a trie-constrained beam of width B0. Every node it keeps is
   evaluated (root, then B0 per depth 1..L: cost 1 + L * B0), so every node,
   complete leaves included, carries its own V, H, G = V + lambda * H (Eq. 11,
   12) and N = 1.
2. Explore, while budget remains: select the expandable node (one with
   unexpanded trie-valid children) of maximum
   U(s) = G(s) + beta * sqrt(ln(N_root + 1) / (N(s) + 1))   (Eq. 13).
   Because Eq. 13 uses the root's count, U ranks nodes tree-wide, so the
   selection is the arg-max over all expandable nodes.
3. Gate (Eq. 14): expand s only if G(s) >= the mean G of the tree's nodes at
   depth(s). If it passes, sample ONE unexpanded valid child from pi
   restricted to those children (temperature tau), evaluate it (cost 1) and
   add it with N = 1.
4. Back up: N += 1 on s and its ancestors, whether or not the gate passed (a
   gated-out node's bonus shrinks, so selection moves on); depth means are
   recomputed from the tree.
5. Candidates: the G best complete leaves by value (ties by log-prob). If
   fewer exist, the rest are greedy completions of evaluated depth-(L-1)
   nodes (their most probable unexpanded valid children, by path log-prob),
   which need no evaluation, so the budget is never exceeded.

Each iteration of step 2-4 is one batched decoder call for all users (one
token each); the tree bookkeeping is written for one user and vmapped. The
loop is a `lax.while_loop` bounded by `max_iters`; nothing leaves the device.

The model comes in through the mctx-style evaluator contract of
`decoding.types`: a pure `evaluator(params, rng_key, EvaluatorInputs) ->
EvaluatorOutput` (logits [B, M, V], value [B, M], the nodes' caches), so the
same search runs on the transformer (`decoding.transformer`) and on toy
policies in tests. The search draws one evaluator key per call.

Shapes: B users, M nodes evaluated per call, N node capacity (= budget),
L levels, V codes, G candidates, B0 init beam width.
"""
import dataclasses
import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from vstar_jax.decoding import types
from vstar_jax.decoding.ved import tree as tree_lib
from vstar_jax.models import policy
from vstar_jax.sid import trie as trie_lib

DecodeTree = tree_lib.DecodeTree
_INIT_KEY_FOLD = 2**31 - 1   # fold_in data of the init's evaluator keys


@dataclasses.dataclass(frozen=True)
class VedConfig:
  """Static VED settings."""
  budget: int                  # decoder tokens per user (Eq. 10)
  init_beam: int               # B0
  num_candidates: int          # G
  lam: float                   # lambda, entropy weight in G (Eq. 11)
  beta: float                  # UCB exploration weight (Eq. 13)
  temperature: float           # tau for sampling the expanded child
  # Loop bound = factor * (budget - init cost): an implementation safety
  # margin, not a run setting.
  max_iters_factor: int = 4

  def init_cost(self, num_levels: int) -> int:
    return 1 + num_levels * self.init_beam

  def validate(self, num_levels: int) -> None:
    if self.init_beam < 1 or self.num_candidates < 1:
      raise ValueError('ved.init_beam and ved.num_candidates must be >= 1')
    if self.budget < self.init_cost(num_levels):
      raise ValueError(
          f'ved.budget={self.budget} is below the init beam cost '
          f'1 + L * B0 = {self.init_cost(num_levels)} (L={num_levels}, '
          f'B0={self.init_beam})')
    if self.temperature <= 0:
      raise ValueError('ved.temperature must be positive')


def restricted_entropy(child_logp: jax.Array) -> jax.Array:
  """Entropy of a distribution given as log-probs with -inf holes. [..., V]."""
  p = jnp.exp(child_logp)
  return -jnp.sum(jnp.where(jnp.isfinite(child_logp), p * child_logp, 0.), -1)


# -- one batched evaluation + insertion ---------------------------------------

def _insert(tree: DecodeTree, evaluate: Callable, trie, rng_key: jax.Array,
            parent: jax.Array, code: jax.Array, depth: jax.Array,
            logp: jax.Array, write: jax.Array, slot: jax.Array,
            num_levels: int) -> DecodeTree:
  """Evaluates M new nodes per user and writes those with `write` set.

  Args:
    tree: the current tree.
    evaluate: (rng_key, codes, depths, path_cache, path_mask) ->
      EvaluatorOutput, the evaluator with params and context bound.
    trie: PrefixTrie.
    rng_key: typed key for the evaluator, consumed.
    parent: [B, M] parent slots (-1 for the root itself).
    code: [B, M] codes on the new edges.
    depth: [B, M] depths of the new nodes.
    logp: [B, M] path log-probs of the new nodes.
    write: [B, M] bool, which new nodes are real.
    slot: [B, M] target slots.
    num_levels: L.
  """
  path = jax.vmap(jax.vmap(tree_lib.path_nodes, (None, 0, None)),
                  (0, 0, None))(tree.parent, parent, num_levels)  # [B, M, L]
  path_mask = path >= 0
  safe_path = jnp.maximum(path, 0)
  path_cache = jax.tree_util.tree_map(
      lambda c: jax.vmap(lambda cb, pb: cb[pb])(c, safe_path), tree.cache)
  out = evaluate(rng_key, code, depth, path_cache, path_mask)
  parent_prefix = jnp.take_along_axis(tree.prefix, jnp.maximum(parent, 0), 1)
  prefix = jnp.where(
      parent >= 0,
      trie_lib.next_prefix_any_level(trie, depth - 1, parent_prefix, code), 0)
  valid = trie_lib.valid_mask_any_level(trie, depth, prefix)
  child_logp = policy.masked_log_softmax(out.logits.astype(jnp.float32),
                                         valid)
  entropy = restricted_entropy(child_logp)

  num_nodes = tree.num_nodes
  target = jnp.where(write, slot, num_nodes)   # out of range: dropped

  def put(field, values):
    return jax.vmap(lambda f, t, v: f.at[t].set(v, mode='drop'))(
        field, target, values)

  child_idx = jax.vmap(
      lambda ci, p, c, t: ci.at[
          jnp.where((t < num_nodes) & (p >= 0), p, num_nodes),
          jnp.maximum(c, 0)].set(t, mode='drop'))(
                                    tree.child_idx, parent, code, target)
  return tree.replace(
      code=put(tree.code, code), depth=put(tree.depth, depth),
      parent=put(tree.parent, parent), prefix=put(tree.prefix, prefix),
      live=put(tree.live, write), logp=put(tree.logp, logp),
      value=put(tree.value, out.value.astype(jnp.float32)),
      entropy=put(tree.entropy, entropy),
      visits=put(tree.visits, jnp.ones_like(code)),
      child_logp=put(tree.child_logp, child_logp),
      child_idx=child_idx,
      cache=jax.tree_util.tree_map(put, tree.cache, out.cache),
      cost=tree.cost + write.sum(-1).astype(jnp.int32))


# -- init: constrained beam of width B0, every kept node evaluated -----------

def _init_tree(evaluate, trie, rng_key, cache_like, *, batch: int,
               cfg: VedConfig) -> DecodeTree:
  """The root and the init beam; rng_key is consumed (evaluator keys)."""
  num_levels = trie.num_levels
  b0 = cfg.init_beam
  keys = jax.random.split(rng_key, num_levels + 1)
  tree = tree_lib.empty_tree(batch, cfg.budget, trie.vocab_size, cache_like)
  zeros = jnp.zeros((batch, 1), jnp.int32)
  tree = _insert(tree, evaluate, trie, keys[0], parent=zeros - 1,
                 code=zeros - 1,
                 depth=zeros, logp=jnp.zeros((batch, 1), jnp.float32),
                 write=jnp.ones((batch, 1), bool), slot=zeros,
                 num_levels=num_levels)
  frontier = zeros                      # [B, F] slots of the last depth
  frontier_live = jnp.ones((batch, 1), bool)
  for depth in range(1, num_levels + 1):
    f_logp = jnp.take_along_axis(tree.logp, frontier, 1)
    f_child = jnp.take_along_axis(tree.child_logp, frontier[..., None], 1)
    cand = jnp.where(frontier_live[..., None], f_logp[..., None] + f_child,
                     -jnp.inf).reshape(batch, -1)
    if cand.shape[1] < b0:
      cand = jnp.pad(cand, ((0, 0), (0, b0 - cand.shape[1])),
                     constant_values=-jnp.inf)
    top, flat = jax.lax.top_k(cand, b0)
    vocab = trie.vocab_size
    which = jnp.minimum(flat // vocab, frontier.shape[1] - 1)
    parent = jnp.take_along_axis(frontier, which, 1)
    code = (flat % vocab).astype(jnp.int32)
    # Live beams come first in top_k order, so slots stay compact: the i-th
    # evaluation of a user always lands in slot i.
    live = jnp.isfinite(top)
    slot = tree.cost[:, None] + jnp.arange(b0, dtype=jnp.int32)[None]
    tree = _insert(tree, evaluate, trie, keys[depth], parent=parent,
                   code=code, depth=jnp.full((batch, b0), depth, jnp.int32),
                   logp=top, write=live, slot=slot, num_levels=num_levels)
    frontier = jnp.minimum(slot, cfg.budget - 1)
    frontier_live = live
  return tree


# -- exploration: selection, gate, expansion, backup --------------------------

def _unexpanded_valid(tree_u: DecodeTree) -> jax.Array:
  """_unbatched_: [N, V] bool, valid children not yet in the tree."""
  return (jnp.isfinite(tree_u.child_logp) &
          (tree_u.child_idx == DecodeTree.UNEXPANDED) & tree_u.live[:, None])


def priority(tree_u: DecodeTree, lam: float) -> jax.Array:
  """G(s) = V(s) + lambda * H(s). _unbatched_: [N]."""
  return tree_u.value + lam * tree_u.entropy


def depth_means(tree_u: DecodeTree, prio: jax.Array, num_levels: int
                ) -> jax.Array:
  """Mean G over live nodes at each depth. _unbatched_: -> [L + 1]."""
  onehot = (tree_u.depth[:, None] == jnp.arange(num_levels + 1)[None]) & (
      tree_u.live[:, None])
  total = jnp.sum(jnp.where(onehot, prio[:, None], 0.), 0)
  return total / jnp.maximum(onehot.sum(0), 1)


def select_node(tree_u: DecodeTree, *, lam: float, beta: float,
                num_levels: int):
  """Selection and gate for one user.

  _unbatched_. Returns (node [] int32, expandable [] bool, passes [] bool).
  """
  prio = priority(tree_u, lam)
  n_root = tree_u.visits[DecodeTree.ROOT].astype(jnp.float32)
  bonus = beta * jnp.sqrt(jnp.log(n_root + 1.) /
                          (tree_u.visits.astype(jnp.float32) + 1.))
  ucb = prio + bonus
  expandable = _unexpanded_valid(tree_u).any(-1)
  node = jnp.argmax(jnp.where(expandable, ucb, -jnp.inf)).astype(jnp.int32)
  mean = depth_means(tree_u, prio, num_levels)[tree_u.depth[node]]
  # Tolerance so that tied priorities (G == mean up to rounding) pass.
  passes = prio[node] >= mean - 1e-6 * jnp.maximum(1., jnp.abs(mean))
  return node, expandable.any(), passes


def _sample_child(tree_u: DecodeTree, node, rng_key, temperature: float):
  """One unexpanded valid child code, from pi restricted to those. _unbatched_."""
  allowed = _unexpanded_valid(tree_u)[node]
  logits = jnp.where(allowed, tree_u.child_logp[node] / temperature,
                     jnp.finfo(jnp.float32).min)
  return jax.random.categorical(rng_key, logits).astype(jnp.int32)


def _backup(visits, parent, node, active, num_levels: int):
  """N += 1 on node and its ancestors. _unbatched_."""
  path = tree_lib.path_nodes(parent, node, num_levels + 1)
  target = jnp.where((path >= 0) & active, path, visits.shape[0])
  return visits.at[target].add(1, mode='drop')


def _explore(tree: DecodeTree, evaluate, trie, rng_key, *, cfg: VedConfig
             ) -> DecodeTree:
  num_levels = trie.num_levels
  max_iters = cfg.max_iters_factor * (cfg.budget - cfg.init_cost(num_levels))
  batch = tree.cost.shape[0]
  select = jax.vmap(functools.partial(select_node, lam=cfg.lam,
                                      beta=cfg.beta, num_levels=num_levels))

  def cond(carry):
    it, _, tree = carry
    return (it < max_iters) & jnp.any(tree.cost < cfg.budget)

  def body(carry):
    it, key, tree = carry
    key, sample_key, evaluate_key = jax.random.split(key, 3)
    node, can_expand, passes = select(tree)
    active = (tree.cost < cfg.budget) & can_expand
    expand = active & passes
    codes = jax.vmap(_sample_child, (0, 0, 0, None))(
        tree, node, jax.random.split(sample_key, batch), cfg.temperature)
    node_logp = jnp.take_along_axis(tree.logp, node[:, None], 1)[:, 0]
    child_logp = jax.vmap(lambda cl, n, c: cl[n, c])(tree.child_logp, node,
                                                     codes)
    depth = jnp.take_along_axis(tree.depth, node[:, None], 1)[:, 0] + 1
    tree = _insert(tree, evaluate, trie, evaluate_key,
                   parent=node[:, None], code=codes[:, None],
                   depth=depth[:, None],
                   logp=(node_logp + child_logp)[:, None],
                   write=expand[:, None], slot=tree.cost[:, None],
                   num_levels=num_levels)
    visits = jax.vmap(_backup, (0, 0, 0, 0, None))(
        tree.visits, tree.parent, node, active, num_levels)
    return it + 1, key, tree.replace(visits=visits)

  _, _, tree = jax.lax.while_loop(cond, body, (0, rng_key, tree))
  return tree


# -- candidates ----------------------------------------------------------------

def _leaf_codes(tree_u: DecodeTree, node, num_levels: int) -> jax.Array:
  """SID codes along the path to `node`. _unbatched_: -> [L]."""
  path = tree_lib.path_nodes(tree_u.parent, node, num_levels + 1)
  safe = jnp.maximum(path, 0)
  depth = jnp.where(path >= 0, tree_u.depth[safe], 0)
  target = jnp.where(depth >= 1, depth - 1, num_levels)
  return jnp.zeros((num_levels,), jnp.int32).at[target].set(
      tree_u.code[safe], mode='drop')


def _candidates_one(tree_u: DecodeTree, trie, num_candidates: int,
                    num_levels: int):
  """_unbatched_ candidate extraction; see step 5 of the module docstring."""
  g = num_candidates
  num_nodes, vocab = tree_u.child_logp.shape
  is_leaf = tree_u.live & (tree_u.depth == num_levels)
  # Leaves: value descending, then log-prob descending; non-leaves last.
  order = jnp.lexsort((-tree_u.logp, -tree_u.value,
                       (~is_leaf).astype(jnp.int32)))
  num_leaves = is_leaf.sum()
  # Completions: unexpanded valid children of live depth-(L-1) nodes.
  parent_ok = tree_u.live & (tree_u.depth == num_levels - 1)
  comp_ok = _unexpanded_valid(tree_u) & parent_ok[:, None]
  comp_logp = jnp.where(comp_ok, tree_u.logp[:, None] + tree_u.child_logp,
                        -jnp.inf).reshape(-1)
  k = min(g, comp_logp.shape[0])
  comp_top, comp_flat = jax.lax.top_k(comp_logp, k)
  if k < g:
    comp_top = jnp.pad(comp_top, (0, g - k), constant_values=-jnp.inf)
    comp_flat = jnp.pad(comp_flat, (0, g - k))
  comp_node = (comp_flat // vocab).astype(jnp.int32)
  comp_code = (comp_flat % vocab).astype(jnp.int32)

  j = jnp.arange(g)
  from_leaf = j < num_leaves
  leaf_node = order[jnp.minimum(j, num_nodes - 1)]
  cj = jnp.clip(j - num_leaves, 0, g - 1)
  c_node, c_code, c_logp = comp_node[cj], comp_code[cj], comp_top[cj]

  leaf_codes = jax.vmap(_leaf_codes, (None, 0, None))(tree_u, leaf_node,
                                                      num_levels)
  comp_codes = jax.vmap(_leaf_codes, (None, 0, None))(tree_u, c_node,
                                                      num_levels)
  comp_codes = comp_codes.at[:, num_levels - 1].set(c_code)
  comp_items = trie_lib.next_prefix_any_level(
      trie, jnp.full((g,), num_levels - 1), tree_u.prefix[c_node], c_code)
  mask = from_leaf | jnp.isfinite(c_logp)
  items = jnp.where(from_leaf, tree_u.prefix[leaf_node], comp_items)
  return dict(
      items=jnp.where(mask, items, -1),
      codes=jnp.where(from_leaf[:, None], leaf_codes, comp_codes),
      logp=jnp.where(from_leaf, tree_u.logp[leaf_node],
                     jnp.where(mask, c_logp, 0.)),
      value=jnp.where(from_leaf, tree_u.value[leaf_node], 0.),
      evaluated=from_leaf, mask=mask)


def _checked_evaluator(evaluator: types.Evaluator, params, context,
                       vocab_size: int) -> Callable:
  """Binds params and user contexts; checks every output's shapes."""
  def evaluate(rng_key, codes, depths, path_cache, path_mask):
    inputs = types.EvaluatorInputs(context=context, codes=codes,
                                   depths=depths, path_cache=path_cache,
                                   path_mask=path_mask)
    out = evaluator(params, rng_key, inputs)
    types.check_output(out, inputs, vocab_size)
    return out
  return evaluate


def ved_search(evaluator: types.Evaluator, params, rng_key: jax.Array,
               context: Any, *, trie, cache_like: Any, cfg: VedConfig
               ) -> tuple[types.Candidates, DecodeTree]:
  """Runs VED for a batch of users. No jit inside: the caller jits.

  Args:
    evaluator: `evaluator(params, rng_key, EvaluatorInputs) ->
      EvaluatorOutput`, the model (see decoding.types).
    params: the evaluator's parameters.
    rng_key: typed key, consumed (child sampling and evaluator keys).
    context: pytree of [B, ...] per-user state handed to every evaluator
      call (the encoded history for the transformer).
    trie: PrefixTrie of the catalogue.
    cache_like: pytree of [B, 1, ...] arrays shaped like one node's cache;
      its leading axis gives B.
    cfg: VedConfig (static).

  Returns:
    (Candidates [B, G], the final DecodeTree).
  """
  num_levels = trie.num_levels
  cfg.validate(num_levels)
  batch = jax.tree_util.tree_leaves(cache_like)[0].shape[0]
  chex.assert_tree_shape_prefix(cache_like, (batch, 1))
  evaluate = _checked_evaluator(evaluator, params, context, trie.vocab_size)
  # The explore loop splits rng_key itself, 3 ways per iteration; the init's
  # evaluator keys come from a fold-in far above those split indices.
  init_key = jax.random.fold_in(rng_key, _INIT_KEY_FOLD)
  tree = _init_tree(evaluate, trie, init_key, cache_like, batch=batch,
                    cfg=cfg)
  tree = _explore(tree, evaluate, trie, rng_key, cfg=cfg)
  cands = jax.vmap(_candidates_one, (0, None, None, None))(
      tree, trie, cfg.num_candidates, num_levels)
  return types.Candidates(cost=tree.cost, **cands), tree
