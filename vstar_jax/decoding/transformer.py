"""The policy network behind VED's evaluator contract, and VED on it.

`transformer_evaluator(net)` adapts `models.policy.PolicyValueNet` to
`decoding.types.Evaluator`: the context is the encoded history (with the
value block), and a node's cache is its token's keys and values, stored
[B, M, Y, H, Dh] so that the tree gathers ancestors by node index.

Shapes: B users, M nodes per call, P path length, T history, Y cached
layers, H heads, Dh head size.
"""
import jax
import jax.numpy as jnp

from vstar_jax.decoding import incremental
from vstar_jax.decoding import types
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy


def transformer_evaluator(net: policy.PolicyValueNet) -> types.Evaluator:
  """The policy network as a VED node evaluator.

  The returned `evaluator(params, rng_key, inputs)` takes the network's
  params and a `policy.Context` [B, ...] as `inputs.context`; decoding is
  deterministic, so rng_key is unused. The value block runs iff the context
  carries it and `inputs.needs_value`; when skipped, the values are 0 and
  the node's value-block keys are zeros (no evaluated node reads them: the
  search skips values only where nothing below is evaluated).
  """
  def evaluator(params, rng_key: jax.Array, inputs: types.EvaluatorInputs
                ) -> types.EvaluatorOutput:
    del rng_key   # no dropout or sampling inside the network at decode time
    context = inputs.context
    has_value_block = context.k.shape[0] == net.cfg.num_layers + 1
    skip_value = has_value_block and not inputs.needs_value
    if skip_value:
      context = policy.Context(k=context.k[:-1], v=context.v[:-1],
                               mask=context.mask)
    layers = context.k.shape[0]
    to_layers_first = lambda x: jnp.moveaxis(x, 3, 0)[:layers]  # [Y,B,M,P,..]
    path = policy.Path(k=to_layers_first(inputs.path_cache['k']),
                       v=to_layers_first(inputs.path_cache['v']),
                       mask=inputs.path_mask[:, :, None, :])
    # One output head when the depth is known statically (a beam step);
    # a depth-L node's logits are meaningless and use the last head.
    head_level = (None if inputs.uniform_depth is None else
                  min(inputs.uniform_depth, net.cfg.num_levels - 1))
    out = net.apply({'params': params}, context,
                    inputs.codes[..., None], inputs.depths[..., None], path,
                    method=net.decode, head_level=head_level)
    k, v = out.k[:, :, :, 0], out.v[:, :, :, 0]          # [Y, B, M, H, Dh]
    if skip_value:
      pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:1])], axis=0)
      k, v = pad(k), pad(v)
    value = (jnp.zeros(inputs.codes.shape, jnp.float32) if out.value is None
             else out.value[:, :, 0])
    return types.EvaluatorOutput(
        logits=out.logits[:, :, 0], value=value,
        cache={'k': jnp.moveaxis(k, 0, 2), 'v': jnp.moveaxis(v, 0, 2)})
  return evaluator


def node_cache_like(net: policy.PolicyValueNet, context: policy.Context):
  """Template of one node's cache: {'k', 'v'} zeros [B, 1, Y, H, Dh], Y the
  context's cached layers (with or without the value block)."""
  batch = context.mask.shape[0]
  shape = (batch, 1, context.k.shape[0], net.cfg.num_heads,
           net.cfg.head_dim)
  return {'k': jnp.zeros(shape, context.k.dtype),
          'v': jnp.zeros(shape, context.k.dtype)}


def ved_decode(net: policy.PolicyValueNet, params, trie, rng_key, history,
               history_mask, *, cfg: search.VedConfig):
  """VED on the policy network: (Candidates [B, G], the DecodeTree).

  history, history_mask: [B, T]; rng_key is consumed (see ved_search).
  """
  context = incremental.encode(
      net, params, trie.codes, history, history_mask,
      with_value=cfg.evaluates_value_at(0, trie.num_levels))
  return search.ved_search(transformer_evaluator(net), params, rng_key,
                           context, trie=trie,
                           cache_like=node_cache_like(net, context), cfg=cfg)
