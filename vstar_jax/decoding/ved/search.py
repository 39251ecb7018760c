"""Value-Guided Efficient Decoding (VED, spec section 5, Eq. 10-14).

Under a budget of `budget` decoder tokens per user (Eq. 10), VED builds a tree
of evaluated SID prefixes and returns G candidate items. Every step below has
a switch in `VedConfig`; `preset('paper', ...)` is our reading of the paper
(checked against tests/ved_reference.py) and `preset('superset', ...)` the
variant whose group contains beam search's before it explores.

1. Init: a trie-constrained beam of width B0 (`init_beam`). Every node it
   keeps is evaluated and carries its own V, H, G = V + lambda * H (Eq. 11,
   12) and N = 1. With `evaluate_leaves` (paper) the beam also evaluates its
   B0 complete leaves; without it, depth L is never evaluated: a complete
   item is scored from its depth-(L-1) parent's logits, as in beam search.
   Cost, counted exactly in the tree (one slot per evaluated token):
     evaluate_leaves:      1 + L * B0        (root, B0 per depth 1..L)
     not evaluate_leaves:  1 + (L - 1) * B0  (= the cost of a width-B0 beam)
   so with B0 = G and no leaf evaluation the init is beam search of width G.
2. Explore, while budget remains. A node is expandable if it has
   unexpanded trie-valid children and (without `evaluate_leaves`) depth
   < L - 1: the children of a depth-(L-1) node are already known for free.
   Priority G(s) = V(s) + lambda * H(s); with `normalize_depth` it is
   replaced by its z-score among the live nodes of its depth (V has a
   depth-dependent offset, H is largest near the root). Selection:
     'tree' (paper reading of Eq. 13): the m = `nodes_per_iter` expansions
       of largest U(s) = G(s) + beta * sqrt(ln(N_root + 1) / (N(s) + 1))
       over the whole tree; a node's k-th child in one call is scored with
       k virtual visits, so a call fills its m slots whenever the tree has
       m expandable children (m = 1: the arg-max node, one child).
     'walk' (mctx-style): from the root, at each depth either descend to
       the child c of largest G(c) + beta * sqrt(ln(N(s) + 1) / (N(c) + 1))
       (children whose subtree can still expand), or stop at s if
       expanding a new child scores higher; a new child is valued at its
       parent's G (first-play urgency from the parent) with N = 0. The walk
       expands up to m children of the node it stops at.
3. Gate (Eq. 14): expand s only if G(s) >= the mean G of the tree's live
   nodes at depth(s) (raw G; the same test as z-score >= 0). The paper
   reading selects first and then gates, so a selected node that fails
   spends the iteration's evaluator call on nothing; with `gate_filters`
   only nodes that pass are selectable (the same nodes can be expanded, but
   every iteration writes up to m of them). Children are
   sampled without replacement from pi restricted to the unexpanded valid
   children at temperature tau (Gumbel top-m; m = 1 is `categorical`), and
   each costs 1 evaluation; the budget is never exceeded.
4. Back up: N += 1 on every selected node and its ancestors, whether or not
   the gate passed (a gated-out node's bonus shrinks, so selection moves on).
5. Candidates: with `evaluate_leaves` the G best evaluated leaves by `rank`,
   then, if fewer, greedy completions by log-prob (paper). Without it, the
   pool is every valid child of an evaluated depth-(L-1) node, its value
   taken from that parent, and the G best by `rank`. `rank`: 'value' (V,
   ties by log-prob; the paper), 'logp' (path log-prob), 'mixed'
   (log-prob + rank_weight * V).

Each iteration of step 2-4 is one batched evaluator call on m nodes per
user; a budget of N exploration tokens takes about N / m iterations. The tree
bookkeeping is written for one user and vmapped. The loop is a
`lax.while_loop` bounded by `max_iters`; nothing leaves the device.

The model comes in through the mctx-style evaluator contract of
`decoding.types`: a pure `evaluator(params, rng_key, EvaluatorInputs) ->
EvaluatorOutput` (logits [B, M, V], value [B, M], the nodes' caches), so the
same search runs on the transformer (`decoding.transformer`) and on toy
policies in tests. The search draws one evaluator key per call.

Shapes: B users, M (= m) nodes evaluated per call, N node capacity
(= budget), L levels, V codes, G candidates, B0 init beam width.
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


RANKINGS = ('value', 'logp', 'mixed')
SELECTIONS = ('tree', 'walk')


@dataclasses.dataclass(frozen=True)
class VedConfig:
  """Static VED settings; the defaults are the paper's reading."""
  budget: int                  # decoder tokens per user (Eq. 10)
  init_beam: int = 8           # B0
  num_candidates: int = 16     # G
  lam: float = 0.1             # lambda, entropy weight in G (Eq. 11)
  beta: float = 1.0            # UCB exploration weight (Eq. 13)
  temperature: float = 1.0     # tau for sampling the expanded children
  max_iters_factor: int = 4    # loop bound = factor * (budget - init cost)
  evaluate_leaves: bool = True  # complete leaves get their own V (cost 1)
  rank: str = 'value'          # candidate ranking, one of RANKINGS
  rank_weight: float = 1.0     # w in rank='mixed': log-prob + w * V
  selection: str = 'tree'      # one of SELECTIONS
  normalize_depth: bool = False  # G as a z-score within its depth
  nodes_per_iter: int = 1      # m, nodes (tree) / children (walk) per call
  diagnose_values: bool = False  # evaluate V where the search never reads it
  gate_filters: bool = False   # gate before selection, not after (step 3)

  def init_cost(self, num_levels: int) -> int:
    evaluated_depths = num_levels if self.evaluate_leaves else num_levels - 1
    return 1 + evaluated_depths * self.init_beam

  def evaluates_value_at(self, depth: int | None, num_levels: int) -> bool:
    """Whether the search evaluates V at nodes of `depth` (None: a call of
    mixed depths, i.e. exploration). V is read by a ranking with V (every
    depth: leaves, or completions valued at their parent), and by selection
    and gate during exploration, which only look at expandable depths
    (< L, or < L - 1 without leaf evaluation). Elsewhere the model may skip
    its value block and the tree stores V = 0, unless `diagnose_values`.
    """
    if self.diagnose_values or self.rank != 'logp':
      return True
    explores = self.budget > self.init_cost(num_levels)
    last_expandable = num_levels - (1 if self.evaluate_leaves else 2)
    return explores and (depth is None or depth <= last_expandable)

  def max_iters(self, num_levels: int) -> int:
    return self.max_iters_factor * (self.budget - self.init_cost(num_levels))

  def validate(self, num_levels: int) -> None:
    if self.init_beam < 1 or self.num_candidates < 1:
      raise ValueError('ved.init_beam and ved.num_candidates must be >= 1')
    if self.budget < self.init_cost(num_levels):
      depths = 'L' if self.evaluate_leaves else '(L - 1)'
      raise ValueError(
          f'ved.budget={self.budget} is below the init beam cost '
          f'1 + {depths} * B0 = {self.init_cost(num_levels)} '
          f'(L={num_levels}, B0={self.init_beam})')
    if self.temperature <= 0:
      raise ValueError('ved.temperature must be positive')
    if self.rank not in RANKINGS:
      raise ValueError(f'ved.rank={self.rank!r}: expected one of {RANKINGS}')
    if self.selection not in SELECTIONS:
      raise ValueError(f'ved.selection={self.selection!r}: expected one of '
                       f'{SELECTIONS}')
    if self.nodes_per_iter < 1:
      raise ValueError('ved.nodes_per_iter must be >= 1')


# Named settings (every field not listed keeps its VedConfig default).
# 'superset': init beam B0 = G without leaf evaluation, so at the beam's
# budget the group is beam search's and every extra token explores; the
# ranking is the one the VED benchmark chose on training prompts, and of
# the two selections, which tie there, the one that fills every call (the
# fewest evaluator calls; WORKSPACE.md, "Superset-of-beam VED" and "VED at
# beam speed").
PRESETS = {
    'paper': dict(init_beam=8),
    'superset': dict(init_beam=None, evaluate_leaves=False, rank='logp',
                     selection='tree', normalize_depth=True,
                     nodes_per_iter=8, gate_filters=True),
}


def preset(name: str, *, budget: int, num_candidates: int = 16,
           **overrides) -> VedConfig:
  """A named VedConfig; init_beam None in a preset means B0 = G."""
  if name not in PRESETS:
    raise ValueError(f'ved preset {name!r}: expected one of {sorted(PRESETS)}')
  fields = dict(PRESETS[name], **overrides)
  if fields.get('init_beam') is None:
    fields['init_beam'] = num_candidates
  return VedConfig(budget=budget, num_candidates=num_candidates, **fields)


def restricted_entropy(child_logp: jax.Array) -> jax.Array:
  """Entropy of a distribution given as log-probs with -inf holes. [..., V]."""
  p = jnp.exp(child_logp)
  return -jnp.sum(jnp.where(jnp.isfinite(child_logp), p * child_logp, 0.), -1)


# -- one batched evaluation + insertion ---------------------------------------

def _insert(tree: DecodeTree, evaluate: Callable, trie, rng_key: jax.Array,
            parent: jax.Array, code: jax.Array, depth: jax.Array,
            logp: jax.Array, write: jax.Array, slot: jax.Array,
            num_levels: int, uniform_depth: int | None = None,
            needs_value: bool = True) -> DecodeTree:
  """Evaluates M new nodes per user and writes those with `write` set.

  Args:
    tree: the current tree.
    evaluate: (rng_key, codes, depths, path_cache, path_mask,
      uniform_depth, needs_value) -> EvaluatorOutput, the evaluator with
      params and context bound.
    trie: PrefixTrie.
    rng_key: typed key for the evaluator, consumed.
    parent: [B, M] parent slots (-1 for the root itself).
    code: [B, M] codes on the new edges.
    depth: [B, M] depths of the new nodes.
    logp: [B, M] path log-probs of the new nodes.
    write: [B, M] bool, which new nodes are real.
    slot: [B, M] target slots.
    num_levels: L.
    uniform_depth: static, the depth of every new node if known (a hint the
      evaluator may use: `types.EvaluatorInputs.uniform_depth`).
    needs_value: static, False if the search never reads these nodes' V
      (`VedConfig.evaluates_value_at`; `types.EvaluatorInputs.needs_value`).
  """
  path = jax.vmap(jax.vmap(tree_lib.path_nodes, (None, 0, None)),
                  (0, 0, None))(tree.parent, parent, num_levels)  # [B, M, L]
  path_mask = path >= 0
  safe_path = jnp.maximum(path, 0)
  path_cache = jax.tree_util.tree_map(
      lambda c: jax.vmap(lambda cb, pb: cb[pb])(c, safe_path), tree.cache)
  out = evaluate(rng_key, code, depth, path_cache, path_mask, uniform_depth,
                 needs_value)
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
# (depths 1..L, or 1..L-1 without leaf evaluation)

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
                 num_levels=num_levels,
                 uniform_depth=None if cfg.evaluate_leaves else 0,
                 needs_value=cfg.evaluates_value_at(0, num_levels))
  frontier = zeros                      # [B, F] slots of the last depth
  frontier_live = jnp.ones((batch, 1), bool)
  last_depth = num_levels if cfg.evaluate_leaves else num_levels - 1
  for depth in range(1, last_depth + 1):
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
    # The one-head hint only without leaf evaluation: the paper preset's
    # logits stay those of the all-heads path it was checked with.
    tree = _insert(tree, evaluate, trie, keys[depth], parent=parent,
                   code=code, depth=jnp.full((batch, b0), depth, jnp.int32),
                   logp=top, write=live, slot=slot, num_levels=num_levels,
                   uniform_depth=None if cfg.evaluate_leaves else depth,
                   needs_value=cfg.evaluates_value_at(depth, num_levels))
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
  return _depth_moments(tree_u, prio, num_levels)[0]


def _depth_moments(tree_u: DecodeTree, prio: jax.Array, num_levels: int):
  """Mean and std of G over live nodes at each depth: ([L + 1], [L + 1])."""
  onehot = (tree_u.depth[:, None] == jnp.arange(num_levels + 1)[None]) & (
      tree_u.live[:, None])
  count = jnp.maximum(onehot.sum(0), 1)
  mean = jnp.sum(jnp.where(onehot, prio[:, None], 0.), 0) / count
  var = jnp.sum(jnp.where(onehot, (prio[:, None] - mean[None]) ** 2, 0.),
                0) / count
  return mean, jnp.sqrt(var)


def _expandable(tree_u: DecodeTree, cfg: VedConfig, num_levels: int):
  """[N] bool: nodes whose expansion costs an evaluation. _unbatched_."""
  can = _unexpanded_valid(tree_u).any(-1)
  if not cfg.evaluate_leaves:   # a depth-(L-1) node's children are free
    can &= tree_u.depth < num_levels - 1
  return can


def _scores(tree_u: DecodeTree, cfg: VedConfig, num_levels: int):
  """(G or its per-depth z-score [N], gate pass [N]). _unbatched_."""
  prio = priority(tree_u, cfg.lam)
  mean, std = _depth_moments(tree_u, prio, num_levels)
  mean, std = mean[tree_u.depth], std[tree_u.depth]
  # Tolerance so that tied priorities (G == mean up to rounding) pass.
  passes = prio >= mean - 1e-6 * jnp.maximum(1., jnp.abs(mean))
  if cfg.normalize_depth:
    prio = (prio - mean) / (std + 1e-6)
  return prio, passes


def _bonus(beta: float, n_parent, n_node):
  return beta * jnp.sqrt(jnp.log(n_parent + 1.) / (n_node + 1.))


def select_node(tree_u: DecodeTree, *, lam: float, beta: float,
                num_levels: int):
  """Tree-wide selection and gate of the paper preset, for one user.

  _unbatched_. Returns (node [] int32, expandable [] bool, passes [] bool).
  """
  cfg = VedConfig(budget=1, lam=lam, beta=beta)
  nodes, _, ok, passes = _select_tree(tree_u, cfg, num_levels)
  return nodes[0], ok[0], passes[0]


def _select_tree(tree_u: DecodeTree, cfg: VedConfig, num_levels: int):
  """The m expansions of largest U. _unbatched_.

  A node may get several children in one call: its k-th (k = 0, 1, ...)
  is scored with k virtual visits added to N(s) (as in parallel MCTS), and
  k stays below its count of unexpanded valid children, so every call fills
  its m slots while the tree has that many expandable children. With m = 1
  this is the arg-max of U over the expandable nodes.

  Returns (nodes [m] int32, copy [m] int32 (the k of each), expandable [m]
  bool, passes [m] bool).
  """
  m = cfg.nodes_per_iter
  prio, passes = _scores(tree_u, cfg, num_levels)
  open_children = _unexpanded_valid(tree_u).sum(-1)                  # [N]
  selectable = _expandable(tree_u, cfg, num_levels)
  if cfg.gate_filters:
    selectable &= passes
  visits = tree_u.visits.astype(jnp.float32)
  copy = jnp.arange(m)
  ucb = prio[:, None] + _bonus(cfg.beta, visits[DecodeTree.ROOT],
                               visits[:, None] + copy[None])          # [N, m]
  ok = selectable[:, None] & (copy[None] < open_children[:, None])
  masked = jnp.where(ok, ucb, -jnp.inf).reshape(-1)
  if m == 1:
    flat = jnp.argmax(masked)[None]
  else:
    _, flat = jax.lax.top_k(masked, min(m, masked.shape[0]))
  flat = flat.astype(jnp.int32)
  nodes = flat // m
  return nodes, flat % m, jnp.isfinite(masked[flat]), passes[nodes]


def _select_walk(tree_u: DecodeTree, cfg: VedConfig, num_levels: int):
  """mctx-style descent from the root (step 2, 'walk'). _unbatched_.

  Returns (node [] int32, expandable [] bool, passes [] bool).
  """
  prio, passes = _scores(tree_u, cfg, num_levels)
  here = _expandable(tree_u, cfg, num_levels)
  if cfg.gate_filters:
    here &= passes
  # Nodes with an expandable node in their subtree (themselves included).
  paths = jax.vmap(tree_lib.path_nodes, (None, 0, None))(
      tree_u.parent, jnp.arange(tree_u.num_nodes), num_levels + 1)
  subtree = jnp.zeros_like(here).at[
      jnp.where(here[:, None] & (paths >= 0), paths, tree_u.num_nodes)].set(
          True, mode='drop')
  visits = tree_u.visits.astype(jnp.float32)
  node, done = jnp.int32(DecodeTree.ROOT), jnp.bool_(False)
  for _ in range(num_levels):
    kids = tree_u.child_idx[node]                                    # [V]
    safe = jnp.maximum(kids, 0)
    kid_u = jnp.where((kids >= 0) & subtree[safe],
                      prio[safe] + _bonus(cfg.beta, visits[node],
                                          visits[safe]), -jnp.inf)
    best = jnp.argmax(kid_u)
    new_u = jnp.where(here[node],
                      prio[node] + _bonus(cfg.beta, visits[node], 0.),
                      -jnp.inf)
    descend = ~done & (kid_u[best] > new_u)
    node = jnp.where(descend, kids[best], node)
    done = ~descend
  return node, here[node], passes[node]


def _children_tree(tree_u: DecodeTree, nodes, copy, rng_key,
                   temperature: float):
  """The copy-th child of each selected node: (codes [m], ok [m]).

  Each node's children are ranked once by Gumbel-perturbed log-probs (a
  sample without replacement, one key per node), so the copies of a node
  get distinct children; with m = 1 this is `categorical`'s draw.
  _unbatched_: nodes, copy [m].
  """
  keys = (rng_key[None] if nodes.shape[0] == 1 else
          jax.vmap(lambda n: jax.random.fold_in(rng_key, n))(nodes))
  allowed = _unexpanded_valid(tree_u)[nodes]                       # [m, V]
  logits = jnp.where(allowed, tree_u.child_logp[nodes] / temperature,
                     jnp.finfo(jnp.float32).min)
  noisy = logits + jax.vmap(
      lambda k: jax.random.gumbel(k, logits.shape[1:]))(keys)
  _, order = jax.lax.top_k(noisy, min(nodes.shape[0], noisy.shape[-1]))
  codes = jnp.take_along_axis(order, copy[:, None], -1)[:, 0].astype(
      jnp.int32)
  return codes, jnp.take_along_axis(allowed, codes[:, None], -1)[:, 0]


def _children_walk(tree_u: DecodeTree, node, rng_key, temperature: float,
                   num: int):
  """Up to `num` distinct children of one node, sampled without replacement
  (Gumbel top-k; its first is `categorical`'s draw). _unbatched_: 2 x [m]."""
  allowed = _unexpanded_valid(tree_u)[node]
  logits = jnp.where(allowed, tree_u.child_logp[node] / temperature,
                     jnp.finfo(jnp.float32).min)
  noisy = logits + jax.random.gumbel(rng_key, logits.shape)
  _, codes = jax.lax.top_k(noisy, num)
  return codes.astype(jnp.int32), allowed[codes]


def _backup(visits, parent, nodes, active, num_levels: int):
  """N += 1 on each active node and its ancestors. _unbatched_: nodes [m]."""
  paths = jax.vmap(tree_lib.path_nodes, (None, 0, None))(
      parent, nodes, num_levels + 1)                            # [m, L + 1]
  target = jnp.where((paths >= 0) & active[:, None], paths, visits.shape[0])
  return visits.at[target].add(1, mode='drop')


def _select_and_pick(tree_u: DecodeTree, rng_key, cfg: VedConfig,
                     num_levels: int):
  """Selection plus children for one user: [m] parents, codes, flags.

  Returns (parent, code, selected, passes, code_ok): `selected` marks the
  entries whose parent counts as visited (tree: once per child; walk: the
  node once).
  """
  m = cfg.nodes_per_iter
  if cfg.selection == 'tree':
    nodes, copy, ok, passes = _select_tree(tree_u, cfg, num_levels)
    codes, code_ok = _children_tree(tree_u, nodes, copy, rng_key,
                                    cfg.temperature)
    return nodes, codes, ok, passes, ok & code_ok
  node, ok, passes = _select_walk(tree_u, cfg, num_levels)
  num = min(m, tree_u.vocab_size)
  codes, code_ok = _children_walk(tree_u, node, rng_key, cfg.temperature,
                                  num)
  first = jnp.arange(num) == 0
  return (jnp.full((num,), node), codes, ok & first, jnp.full((num,), passes),
          ok & code_ok)


def _explore(tree: DecodeTree, evaluate, trie, rng_key, *, cfg: VedConfig
             ) -> DecodeTree:
  num_levels = trie.num_levels
  max_iters = cfg.max_iters(num_levels)
  batch = tree.cost.shape[0]
  pick = jax.vmap(functools.partial(_select_and_pick, cfg=cfg,
                                    num_levels=num_levels))

  def cond(carry):
    it, _, tree = carry
    return (it < max_iters) & jnp.any(tree.cost < cfg.budget)

  def body(carry):
    it, key, tree = carry
    key, sample_key, evaluate_key = jax.random.split(key, 3)
    parent, codes, selected, passes, code_ok = pick(
        tree, jax.random.split(sample_key, batch))                 # [B, m]
    room = (tree.cost < cfg.budget)[:, None]
    active = selected & room
    want = room & passes & code_ok
    rank = jnp.cumsum(want, -1, dtype=jnp.int32)
    write = want & (tree.cost[:, None] + rank <= cfg.budget)
    parent_logp = jnp.take_along_axis(tree.logp, parent, 1)
    child_logp = jax.vmap(lambda cl, p, c: cl[p, c])(tree.child_logp, parent,
                                                     codes)
    depth = jnp.take_along_axis(tree.depth, parent, 1) + 1
    tree = _insert(tree, evaluate, trie, evaluate_key, parent=parent,
                   code=codes, depth=depth, logp=parent_logp + child_logp,
                   write=write, slot=tree.cost[:, None] + rank - 1,
                   num_levels=num_levels,
                   needs_value=cfg.evaluates_value_at(None, num_levels))
    visits = jax.vmap(_backup, (0, 0, 0, 0, None))(
        tree.visits, tree.parent, parent, active, num_levels)
    return it + 1, key, tree.replace(visits=visits)

  iters, _, tree = jax.lax.while_loop(cond, body, (0, rng_key, tree))
  return tree.replace(iterations=jnp.full_like(tree.cost, iters))


# -- candidates ----------------------------------------------------------------

def rank_score(cfg: VedConfig, logp: jax.Array, value: jax.Array
               ) -> jax.Array:
  """The primary candidate-ranking key (larger is better); ties by logp."""
  if cfg.rank == 'value':
    return value
  if cfg.rank == 'logp':
    return logp
  return logp + cfg.rank_weight * value


def _leaf_codes(tree_u: DecodeTree, node, num_levels: int) -> jax.Array:
  """SID codes along the path to `node`. _unbatched_: -> [L]."""
  path = tree_lib.path_nodes(tree_u.parent, node, num_levels + 1)
  safe = jnp.maximum(path, 0)
  depth = jnp.where(path >= 0, tree_u.depth[safe], 0)
  target = jnp.where(depth >= 1, depth - 1, num_levels)
  return jnp.zeros((num_levels,), jnp.int32).at[target].set(
      tree_u.code[safe], mode='drop')


def completions(tree_u: DecodeTree, num_levels: int):
  """Unexpanded valid children of live depth-(L-1) nodes. _unbatched_.

  Returns (ok [N, V] bool, path log-prob [N, V], parent value [N, V]).
  """
  parent_ok = tree_u.live & (tree_u.depth == num_levels - 1)
  ok = _unexpanded_valid(tree_u) & parent_ok[:, None]
  logp = jnp.where(ok, tree_u.logp[:, None] + tree_u.child_logp, -jnp.inf)
  value = jnp.broadcast_to(tree_u.value[:, None], ok.shape)
  return ok, logp, value


def _best(primary: jax.Array, logp: jax.Array, k: int, *,
          logp_breaks_ties: bool) -> jax.Array:
  """Indices of the k best by primary desc, then (logp_breaks_ties) logp
  desc, then index asc. [P]. A full sort only where ties by log-prob are
  needed (rank='value' over completions, which share their parent's V)."""
  if not logp_breaks_ties:
    return jax.lax.top_k(primary, k)[1]
  return jnp.lexsort((-logp, -primary))[:k]


def _best_completions(tree_u: DecodeTree, cfg: VedConfig, num_levels: int,
                      g: int):
  """The g best completions: (flat index node * V + code [g], log-prob [g],
  -inf past the pool). _unbatched_.

  With `evaluate_leaves` (the paper's greedy fill) they are ranked by
  log-prob; otherwise by `rank` (ties by log-prob, then index). A
  completion's key only grows with its log-prob among its siblings (they
  share the parent's V), so without leaf evaluation the g best are found
  among each parent's g best: a top-g per row, then over N * g, instead of
  one selection over all N * V.
  """
  num_nodes, vocab = tree_u.child_logp.shape
  comp_ok, comp_logp, comp_value = completions(tree_u, num_levels)
  if cfg.evaluate_leaves:
    flat_logp = comp_logp.reshape(-1)
    k = min(g, flat_logp.shape[0])
    flat = _best(flat_logp, flat_logp, k, logp_breaks_ties=False)
  else:   # comp_logp is -inf off the pool, and so is logp + w * V
    by_value = cfg.rank == 'value'
    key = rank_score(cfg, comp_logp, comp_value)
    if by_value:
      key = jnp.where(comp_ok, key, -jnp.inf)
    # Siblings in the global order: by key, or by log-prob under equal V.
    kr = min(g, vocab)
    _, row_code = jax.lax.top_k(comp_logp if by_value else key, kr)  # [N, kr]
    rows = jnp.arange(num_nodes)[:, None]
    k = min(g, num_nodes * kr)
    pick = _best(key[rows, row_code].reshape(-1),
                 comp_logp[rows, row_code].reshape(-1), k,
                 logp_breaks_ties=by_value)
    flat = (pick // kr) * vocab + row_code.reshape(-1)[pick]
  top = comp_logp.reshape(-1)[flat]
  if k < g:
    top = jnp.pad(top, (0, g - k), constant_values=-jnp.inf)
    flat = jnp.pad(flat, (0, g - k))
  return flat, top


def _candidates_one(tree_u: DecodeTree, trie, cfg: VedConfig,
                    num_levels: int):
  """_unbatched_ candidate extraction; see step 5 of the module docstring."""
  g = cfg.num_candidates
  num_nodes, vocab = tree_u.child_logp.shape
  is_leaf = tree_u.live & (tree_u.depth == num_levels)
  leaf_key = rank_score(cfg, tree_u.logp, tree_u.value)
  # Leaves: rank key descending, then log-prob descending; non-leaves last.
  order = jnp.lexsort((-tree_u.logp, -leaf_key,
                       (~is_leaf).astype(jnp.int32)))
  num_leaves = is_leaf.sum()
  comp_flat, comp_top = _best_completions(tree_u, cfg, num_levels, g)
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


def leaf_pool(tree_u: DecodeTree, trie, cfg: VedConfig, num_levels: int):
  """The complete items the candidates are ranked among. _unbatched_.

  With `evaluate_leaves`: the evaluated depth-L nodes ([N]); otherwise every
  valid child of an evaluated depth-(L-1) node ([N * V]), valued at its
  parent. Returns (items, logp, value, ok), each [P].
  """
  if cfg.evaluate_leaves:
    ok = tree_u.live & (tree_u.depth == num_levels)
    return tree_u.prefix, tree_u.logp, tree_u.value, ok
  ok, logp, value = completions(tree_u, num_levels)
  num_nodes, vocab = ok.shape
  items = trie_lib.next_prefix_any_level(
      trie, jnp.full((num_nodes, vocab), num_levels - 1),
      jnp.broadcast_to(tree_u.prefix[:, None], ok.shape),
      jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32)[None], ok.shape))
  return (items.reshape(-1), logp.reshape(-1), value.reshape(-1),
          ok.reshape(-1))


def _checked_evaluator(evaluator: types.Evaluator, params, context,
                       vocab_size: int) -> Callable:
  """Binds params and user contexts; checks every output's shapes."""
  def evaluate(rng_key, codes, depths, path_cache, path_mask,
               uniform_depth=None, needs_value=True):
    inputs = types.EvaluatorInputs(context=context, codes=codes,
                                   depths=depths, path_cache=path_cache,
                                   path_mask=path_mask,
                                   uniform_depth=uniform_depth,
                                   needs_value=needs_value)
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
      tree, trie, cfg, num_levels)
  return types.Candidates(cost=tree.cost, **cands), tree
