"""Scale-out checks and estimates (launch/scale_bench.py).

`time_steps_on_mesh`: SFT and RL step time on a mesh of n devices, counting
traces and running under jax.transfer_guard('disallow'), so a recompilation
or an implicit host transfer per step would show (fake CPU devices share the
same cores: the times check overheads, they are no speed-up claim).
`flops_per_example`: XLA's cost_analysis of the compiled steps on one device.
`estimate`: examples/s and epoch time on an accelerator pool from those
FLOPs, a datasheet peak and an assumed utilisation.

Shapes: B batch, T history, L levels, V codes, N items, D embedding.
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vstar_jax import parallel
from vstar_jax.bench import flops
from vstar_jax.bench import timing
from vstar_jax.decoding import beam
from vstar_jax.decoding.ved import search
from vstar_jax.models import policy
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.sid import trie as trie_lib
from vstar_jax.train import loop
from vstar_jax.train import sft
from vstar_jax.train import state as state_lib

# Dense bf16 peak per chip (vendor datasheets): TPU v5e 197 TFLOP/s, H100 SXM
# 989 TFLOP/s (without sparsity).
POOLS = {'v5e-64': (64, 197e12), '8xH100': (8, 989e12)}


@dataclasses.dataclass(frozen=True)
class Workload:
  """A synthetic catalogue and step settings (static)."""
  cfg: policy.PolicyConfig
  num_items: int = 2000
  sft_batch: int = 64
  rl_batch: int = 16
  num_candidates: int = 16       # G
  rollout: str = 'ved'           # 'ved' | 'beam'
  ved_init_beam: int = 8
  ved_kappa: float = 2.0


def synthetic_trie(w: Workload, seed: int = 0) -> trie_lib.PrefixTrie:
  """A trie of w.num_items random unique SIDs."""
  rng = np.random.default_rng(seed)
  codes = set()
  while len(codes) < w.num_items:
    codes.add(tuple(int(c) for c in rng.integers(
        0, w.cfg.vocab_size, w.cfg.num_levels)))
  return trie_lib.build_trie(np.array(sorted(codes), np.int32),
                             vocab_size=w.cfg.vocab_size)


def synthetic_batches(w: Workload, batch_size: int, num: int, seed: int = 1
                      ) -> list[dict[str, np.ndarray]]:
  """`num` host batches: history [B, T], history_mask [B, T], target [B],
  example_mask [B]."""
  rng = np.random.default_rng(seed)
  t = w.cfg.max_history
  return [{'history': rng.integers(0, w.num_items, (batch_size, t)
                                   ).astype(np.int32),
           'history_mask': np.arange(t)[None] >= rng.integers(
               0, t - 1, (batch_size, 1)),
           'target': rng.integers(0, w.num_items, batch_size
                                  ).astype(np.int32),
           'example_mask': np.ones(batch_size, bool)} for _ in range(num)]


def _rollout_cfg(w: Workload) -> rollout_lib.RolloutConfig:
  budget = round(w.ved_kappa * beam.decode_cost(w.cfg.num_levels,
                                                w.ved_init_beam))
  return rollout_lib.RolloutConfig(
      kind=w.rollout, num_candidates=w.num_candidates,
      beam_width=w.num_candidates,
      ved=search.VedConfig(budget=budget, init_beam=w.ved_init_beam,
                           num_candidates=w.num_candidates,
                           lam=0.1, beta=1.0, temperature=1.0),
      temperature=1.0)


def _counted(fn: Callable, traces: list) -> Callable:
  @functools.wraps(fn)
  def wrapped(*args):
    traces.append(1)
    return fn(*args)
  return wrapped


def _steps(w: Workload, mesh, *, fsdp: bool):
  """(sft (jitted, args_fn), rl (jitted, args_fn), trace lists)."""
  net = policy.PolicyValueNet(w.cfg)
  tx = optax.adamw(1e-3)
  state, sharding = parallel.create_sharded(
      lambda key: state_lib.TrainState.create(policy.init_params(w.cfg, key),
                                              tx),
      lambda a: parallel.tree_shardings(mesh, a, fsdp=fsdp,
                                          fsdp_min_size=2 ** 14),
      jax.random.key(0))
  repl = parallel.replicated(mesh)
  rng = np.random.default_rng(2)
  emb = rng.normal(size=(w.num_items, 8)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  trie, emb, key = parallel.host_to_global(
      (synthetic_trie(w), emb, jax.random.key(1)), repl)
  reference = jax.tree_util.tree_map(jnp.copy, state.params)
  traces = {'sft': [], 'rl': []}
  sft_step = loop.jit_sft_step(
      _counted(sft.make_sft_step(net), traces['sft']), mesh, sharding)
  rl_step = loop.jit_rl_step(
      _counted(rl_step_lib.make_rl_step(
          net, _rollout_cfg(w),
          rl_step_lib.RLConfig(step_weights=(1.,) * w.cfg.num_levels,
                               reward='ranking', grpo_weight=1.0,
                               sibling_alpha=1.0, sibling_min_std=0.0,
                               clip_eps=0.2, updates_per_rollout=1,
                               kl_beta=1e-3, value_coef=0.5, gamma=0.99,
                               value_warmup_steps=0)),
               traces['rl']), mesh, sharding)
  return (state, sft_step, rl_step, trie, emb, key, reference, traces)


def time_steps_on_mesh(w: Workload, devices, *, fsdp: bool, num_steps: int
                       ) -> dict[str, Any]:
  """SFT and RL step times on a 'data' mesh over `devices`.

  Every timed step gets its own global batch (placed before timing) and
  runs under transfer_guard('disallow'); the state is threaded through.
  """
  mesh = parallel.make_mesh(devices, data=-1, model=1)
  state, sft_step, rl_step, trie, emb, key, reference, traces = _steps(
      w, mesh, fsdp=fsdp)
  out = {'num_devices': len(devices), 'fsdp': fsdp}
  for kind, batch_size in (('sft', w.sft_batch), ('rl', w.rl_batch)):
    parallel.check_batch_size(mesh, batch_size, f'{kind} batch')
    batches = [parallel.global_batch(b, mesh) for b in synthetic_batches(
        w, batch_size, num_steps + 1)]
    holder = {'state': state}

    def call(i, kind=kind, batches=batches, holder=holder):
      b = batches[i + 1]
      with jax.transfer_guard('disallow'):
        if kind == 'sft':
          holder['state'], m = sft_step(holder['state'], b, trie, key)
        else:
          holder['state'], m = rl_step(holder['state'], reference, b, trie,
                                       emb, key)
      return m['loss']

    t = timing.time_calls(call, num_calls=num_steps, num_warmup=1)
    state = holder['state']
    out[kind] = {'median_s': t.median_s, 'min_s': t.min_s,
                 'examples_per_s': batch_size / t.median_s,
                 'batch_size': batch_size,
                 'traces': len(traces[kind])}
  return out


def flops_per_example(w: Workload) -> dict[str, float]:
  """XLA cost_analysis FLOPs of one SFT example and one RL prompt.

  XLA counts a while loop's body once, so the RL step is compiled with a
  beam rollout of width G (1 + (L-1) G decoder tokens per prompt), and the
  VED rollout's extra tokens (its budget minus that) are added analytically
  at the per-token cost of the beam's deepest level.
  """
  mesh = parallel.make_mesh(jax.devices()[:1], data=-1, model=1)
  beam_w = dataclasses.replace(w, rollout='beam')
  state, sft_step, rl_step, trie, emb, key, reference, _ = _steps(
      beam_w, mesh, fsdp=False)
  sft_b = parallel.global_batch(synthetic_batches(w, w.sft_batch, 1)[0], mesh)
  rl_b = parallel.global_batch(synthetic_batches(w, w.rl_batch, 1)[0], mesh)
  sft_flops = timing.cost_flops(sft_step.lower(state, sft_b, trie, key
                                               ).compile()) / w.sft_batch
  rl_flops = timing.cost_flops(rl_step.lower(
      state, reference, rl_b, trie, emb, key).compile()) / w.rl_batch
  extra_tokens = 0
  if w.rollout == 'ved':
    extra_tokens = max(_rollout_cfg(w).ved.budget - beam.decode_cost(
        w.cfg.num_levels, w.num_candidates), 0)
  t = w.cfg.max_history + w.cfg.num_levels
  per_token = flops.trunk_flops(w.cfg, 1, t) + flops.head_flops(w.cfg, 1)
  return {'sft_per_example': sft_flops,
          'rl_per_prompt': rl_flops + extra_tokens * per_token,
          'rl_beam_rollout_per_prompt': rl_flops,
          'ved_extra_tokens': extra_tokens}


def estimate(flops_per_item: float, num_items: int, *, mfu: float
             ) -> dict[str, dict[str, float]]:
  """{pool: {'examples_per_s', 'epoch_s'}} at utilisation `mfu`."""
  out = {}
  for pool, (chips, peak) in POOLS.items():
    rate = chips * peak * mfu / flops_per_item
    out[pool] = {'examples_per_s': rate, 'epoch_s': num_items / rate}
  return out
