"""Analytic FLOP counts of the policy network and the machine's matmul peak.

Counts are matrix-multiply FLOPs (2 per multiply-add) of the trunk blocks,
their attention (scores and weighted values over every key the code
computes, masked or not) and the output head; embedding gathers, LayerNorm,
GELU and softmax are not counted. Two variants:

  * `minimal=False`: what `PolicyValueNet` computes as written. Teacher
    forcing runs the depth-L token through the trunk although it has no next
    level, and the last layer's history tokens go through the fused q, k, v
    projection although only k and v are read.
  * `minimal=True`: the least any implementation of the same network needs:
    no depth-L token in training, only k and v for the last history layer.

Both apply one output head level per token (`decode(head_level=...)`) and
skip the value block (`with_value=False`): beam search and the SFT loss never
read values. tests/benchmark_test.py cross-checks the `minimal=False` counts
against XLA's cost_analysis.

Shapes: T history, L levels, K beams, V codes, D width.
"""
import time

import jax
import jax.numpy as jnp

from vstar_jax.models import policy


def trunk_flops(cfg: policy.PolicyConfig, num_tokens: int,
                num_keys: int) -> int:
  """Trunk blocks over num_tokens tokens that each attend to num_keys keys."""
  d = cfg.width
  mlp = cfg.mlp_ratio * d
  # qkv 6D^2, output projection 2D^2, MLP 2 x 2DM; attention 2D per key for
  # the scores and 2D per key for the weighted values.
  per_token = 6 * d * d + 2 * d * d + 4 * d * mlp + 4 * d * num_keys
  return cfg.num_layers * num_tokens * per_token


def prefill_flops(cfg: policy.PolicyConfig, num_history: int, *,
                  minimal: bool) -> int:
  """History tokens: every layer but the last, then the last one's k, v (and
  q unless minimal) projection."""
  d = cfg.width
  last = (4 if minimal else 6) * d * d * num_history
  return (trunk_flops(cfg, num_history, num_history) * (cfg.num_layers - 1)
          // cfg.num_layers + last)


def head_flops(cfg: policy.PolicyConfig, num_tokens: int) -> int:
  """One output head level applied to each of num_tokens tokens."""
  return num_tokens * 2 * cfg.width * cfg.vocab_size


def beam_search_flops(cfg: policy.PolicyConfig, *, num_history: int,
                      beam_width: int, minimal: bool) -> int:
  """FLOPs of one user's beam search: history prefill, then 1 + (L-1)K
  decoder tokens, the depth-d tokens attending to T + d + 1 keys."""
  flops = prefill_flops(cfg, num_history, minimal=minimal)
  flops += trunk_flops(cfg, 1, num_history + 1)
  for depth in range(1, cfg.num_levels):
    flops += trunk_flops(cfg, beam_width, num_history + depth + 1)
  num_decoder = 1 + (cfg.num_levels - 1) * beam_width
  return flops + head_flops(cfg, num_decoder)


def sft_forward_flops(cfg: policy.PolicyConfig, *, num_history: int,
                      minimal: bool) -> int:
  """Teacher-forcing forward FLOPs of one example: T history tokens and the
  decoder tokens BOS, y_1..y_L (y_L dropped if minimal), attending densely to
  the history and to all decoder tokens (causality is a mask)."""
  num_decoder = cfg.num_levels if minimal else cfg.num_levels + 1
  return (prefill_flops(cfg, num_history, minimal=minimal) +
          trunk_flops(cfg, num_decoder, num_history + num_decoder) +
          head_flops(cfg, cfg.num_levels))


def sft_train_flops(cfg: policy.PolicyConfig, *, num_history: int,
                    minimal: bool) -> int:
  """Forward plus backward (twice the forward) of one example."""
  return 3 * sft_forward_flops(cfg, num_history=num_history, minimal=minimal)


def measure_matmul_flops(size: int = 2048, *, dtype=jnp.float32,
                         num_repeats: int = 5) -> float:
  """Best FLOP/s of a jitted [size, size] x [size, size] matmul.

  The best of num_repeats (not the median): the peak this machine reaches.
  """
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (size, size), dtype)
  b = jax.random.normal(key_b, (size, size), dtype)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  best = float('inf')
  for _ in range(num_repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best
