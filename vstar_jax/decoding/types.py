"""Types shared by the decoders: the candidate group they all return, and
the node-evaluator contract VED searches with.

The evaluator contract follows mctx's `recurrent_fn`: a pure function

  evaluator(params, rng_key, inputs: EvaluatorInputs) -> EvaluatorOutput

evaluates M new tree nodes per user in one batched call. A node is an SID
prefix; its decoder token is the code on the edge into it (BOS at the root),
and it sees its ancestors only through their caches. The model behind it is
the caller's (the policy network in `decoding.transformer`, toy models in
tests); the search checks the output's shapes with `check_output`.

Shapes: B users, G candidates, L levels, M nodes per call, P ancestors per
node (= L), V codes.
"""
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp


@chex.dataclass(frozen=True)
class Candidates:
  """G candidate items per user, the group RL scores and compares."""
  items: chex.Array      # [B, G] int32 item index, -1 where mask is False
  codes: chex.Array      # [B, G, L] int32 SID codes
  logp: chex.Array       # [B, G] float32 log-prob under the rollout policy
  value: chex.Array      # [B, G] float32 leaf value (0 for completions)
  evaluated: chex.Array  # [B, G] bool, True = an evaluated tree leaf
  mask: chex.Array       # [B, G] bool, True = a real candidate
  cost: chex.Array       # [B] int32 decoder tokens spent


def unevaluated_candidates(items: chex.Array, codes: chex.Array,
                           logp: chex.Array, mask: chex.Array,
                           cost: int) -> Candidates:
  """Candidates of a decoder that evaluates no values (beam, sampling).

  items, logp, mask: [B, G]; codes: [B, G, L]; cost: decoder tokens per user.
  Masked-out entries get item -1 and log-prob 0.
  """
  chex.assert_equal_shape([items, logp, mask])
  return Candidates(
      items=jnp.where(mask, items, -1), codes=codes,
      logp=jnp.where(mask, logp, 0.),
      value=jnp.zeros(mask.shape, jnp.float32),
      evaluated=jnp.zeros(mask.shape, bool), mask=mask,
      cost=jnp.full(mask.shape[:1], cost, jnp.int32))


@chex.dataclass(frozen=True)
class EvaluatorInputs:
  """M new nodes per user to evaluate, with their ancestors' caches."""
  context: Any            # pytree of [B, ...] per-user state (the history)
  codes: chex.Array       # [B, M] int32 code into the node, -1 at the root
  depths: chex.Array      # [B, M] int32, 0 = root (BOS), L = complete item
  path_cache: Any         # pytree of [B, M, P, ...] ancestors' caches,
                          # parent first
  path_mask: chex.Array   # [B, M, P] bool, True = a real ancestor
  # Static: every node of this call has this depth (the search's init beam),
  # so a model may apply one level's output head; None: mixed depths.
  uniform_depth: int | None = None
  # Static: False if the search never reads these nodes' values (a model may
  # skip its value head and return zeros; their caches must stay valid).
  needs_value: bool = True


@chex.dataclass(frozen=True)
class EvaluatorOutput:
  """What the model says about each new node."""
  logits: chex.Array  # [B, M, V] next-code logits, not trie-masked
  value: chex.Array   # [B, M] value-head estimate of the prefix
  cache: Any          # pytree of [B, M, ...], the node's own cache


# evaluator(params, rng_key, inputs) -> EvaluatorOutput; rng_key is consumed.
Evaluator = Callable[[Any, jax.Array, EvaluatorInputs], EvaluatorOutput]


def check_output(out: EvaluatorOutput, inputs: EvaluatorInputs,
                 vocab_size: int) -> None:
  """Asserts (at trace time) that `out` fits `inputs` and V codes."""
  nodes = inputs.codes.shape
  chex.assert_shape(out.logits, nodes + (vocab_size,))
  chex.assert_shape(out.value, nodes)
  chex.assert_type([out.logits, out.value], [float, float])
  chex.assert_tree_shape_prefix(out.cache, nodes)
