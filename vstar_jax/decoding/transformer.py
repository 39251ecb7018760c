"""The policy network behind VED's node evaluator, and VED on it.

Shapes: B users, M nodes per call, P path length, T history, Y cached
layers, H heads, Dh head size.
"""
import jax.numpy as jnp

from vstar_jax.decoding import incremental
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy


def transformer_evaluator(net: policy.PolicyValueNet, params,
                          context: policy.Context):
  """VED node evaluator over the policy network (see ved.search).

  The per-node cache is the node token's keys/values, stored [B, M, Y, H, Dh]
  so that the tree can gather ancestors by node index.
  """
  variables = {'params': params}

  def evaluate(codes, depths, path_cache, path_mask):
    to_layers_first = lambda x: jnp.moveaxis(x, 3, 0)  # [B,M,P,Y,..]->[Y,..]
    path = policy.Path(k=to_layers_first(path_cache['k']),
                       v=to_layers_first(path_cache['v']),
                       mask=path_mask[:, :, None, :])
    out = net.apply(variables, context, codes[..., None], depths[..., None],
                    path, method=net.decode)
    cache = {'k': jnp.moveaxis(out.k[:, :, :, 0], 0, 2),
             'v': jnp.moveaxis(out.v[:, :, :, 0], 0, 2)}
    return out.logits[:, :, 0], out.value[:, :, 0], cache

  batch = context.mask.shape[0]
  shape = (batch, 1, net.cfg.num_layers + 1, net.cfg.num_heads,
           net.cfg.head_dim)
  cache_like = {'k': jnp.zeros(shape, context.k.dtype),
                'v': jnp.zeros(shape, context.k.dtype)}
  return evaluate, cache_like


def ved_decode(net: policy.PolicyValueNet, params, trie, rng_key, history,
               history_mask, *, cfg: search.VedConfig):
  """VED on the policy network: (Candidates [B, G], the DecodeTree).

  history, history_mask: [B, T]; rng_key is consumed (child sampling).
  """
  context = incremental.encode(net, params, trie.codes, history, history_mask,
                               with_value=True)
  evaluate, cache_like = transformer_evaluator(net, params, context)
  return search.ved_search(evaluate, trie, rng_key, batch=history.shape[0],
                           cache_like=cache_like, cfg=cfg)
