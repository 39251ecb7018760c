"""The VED search tree: fixed-shape arrays with sentinels (mctx's Tree idea).

Every node is one evaluated decoder token, so the node capacity equals the
decoder-token budget: slot i is filled by the i-th evaluation (the root is
slot 0), and `cost` is the number of filled slots.

Shapes: B users, N node capacity (= budget), V codes per level, plus the
model's per-token cache leaves [B, N, ...].
"""
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp


@chex.dataclass(frozen=True)
class DecodeTree:
  """VED search state for a batch of users; all arrays preallocated."""
  code: chex.Array        # [B, N] int32, SID code on the edge into the node
  depth: chex.Array       # [B, N] int32, 0 = root (BOS), L = complete item
  parent: chex.Array      # [B, N] int32, NO_PARENT at the root / free slots
  prefix: chex.Array      # [B, N] int32, trie prefix id (item at depth L)
  live: chex.Array        # [B, N] bool, True = evaluated node in the tree
  logp: chex.Array        # [B, N] float32, path log-prob under constrained pi
  value: chex.Array       # [B, N] float32, V(s) from the value head
  entropy: chex.Array     # [B, N] float32, H(s) of the restricted next code
  visits: chex.Array      # [B, N] int32, N(s)
  child_logp: chex.Array  # [B, N, V] float32, log pi(code | s), -inf invalid
  child_idx: chex.Array   # [B, N, V] int32, UNEXPANDED until evaluated
  cache: Any              # pytree of [B, N, ...]: the node token's keys
  cost: chex.Array        # [B] int32, decoder tokens evaluated
  iterations: chex.Array  # [B] int32, exploration loop iterations run

  ROOT: ClassVar[int] = 0
  NO_PARENT: ClassVar[int] = -1
  UNEXPANDED: ClassVar[int] = -1

  @property
  def num_nodes(self) -> int:
    return self.code.shape[-1]

  @property
  def vocab_size(self) -> int:
    return self.child_logp.shape[-1]


def empty_tree(batch: int, num_nodes: int, vocab: int, cache_like: Any
               ) -> DecodeTree:
  """An all-free tree; `cache_like` leaves are [B, 1, ...] templates."""
  ints = lambda fill: jnp.full((batch, num_nodes), fill, jnp.int32)
  floats = lambda fill: jnp.full((batch, num_nodes), fill, jnp.float32)
  cache = jax.tree_util.tree_map(
      lambda x: jnp.zeros((batch, num_nodes) + x.shape[2:], x.dtype),
      cache_like)
  return DecodeTree(
      code=ints(-1), depth=ints(0), parent=ints(DecodeTree.NO_PARENT),
      prefix=ints(-1), live=jnp.zeros((batch, num_nodes), bool),
      logp=floats(-jnp.inf), value=floats(0.), entropy=floats(0.),
      visits=ints(0),
      child_logp=jnp.full((batch, num_nodes, vocab), -jnp.inf, jnp.float32),
      child_idx=jnp.full((batch, num_nodes, vocab), DecodeTree.UNEXPANDED,
                         jnp.int32),
      cache=cache, cost=jnp.zeros((batch,), jnp.int32),
      iterations=jnp.zeros((batch,), jnp.int32))


def path_nodes(parent: jax.Array, node: jax.Array, length: int) -> jax.Array:
  """Node, parent, grandparent, ... (`length` entries, -1 past the root).

  _unbatched_: parent [N], node [] int32 -> [length] int32.
  """
  def step(idx, _):
    nxt = jnp.where(idx >= 0, parent[jnp.maximum(idx, 0)], -1)
    return nxt, idx
  _, nodes = jax.lax.scan(step, node, None, length=length)
  return nodes
