"""Timing of compiled JAX calls: compile time apart, warm-up excluded, every
call blocked until ready, several calls, median reported."""
import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds of one compilation and of each timed call."""
  compile_s: float | None
  times_s: tuple[float, ...]

  @property
  def median_s(self) -> float:
    return float(np.median(self.times_s))

  @property
  def min_s(self) -> float:
    return float(np.min(self.times_s))

  def to_json(self) -> dict:
    return {'compile_s': self.compile_s, 'median_s': self.median_s,
            'min_s': self.min_s, 'times_s': list(self.times_s)}


def compile_timed(jitted, *args, **kwargs):
  """Lowers and compiles a jitted function for these arguments.

  Returns:
    (compiled executable, seconds spent tracing, lowering and compiling).
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - start


def cost_flops(compiled) -> float:
  """XLA's FLOP estimate of a compiled executable (one call)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):   # older jax: one dict per module
    analysis = analysis[0]
  if 'flops' not in analysis:
    raise KeyError(f'cost_analysis has no "flops" entry: {sorted(analysis)}')
  return float(analysis['flops'])


def time_calls(call: Callable[[int], Any], *, num_calls: int,
               num_warmup: int = 1, compile_s: float | None = None
               ) -> Timing:
  """Times call(i) for i in [0, num_calls) after num_warmup untimed calls.

  Args:
    call: runs one measured unit (e.g. one batch) given its index; warm-up
      calls get indices -num_warmup..-1. Its result is blocked on.
    num_calls: timed calls (at least 1).
    num_warmup: untimed calls first (caches, first-run allocation).
    compile_s: compile time measured elsewhere, stored in the Timing.
  """
  if num_calls < 1:
    raise ValueError(f'num_calls must be >= 1, got {num_calls}')
  for i in range(-num_warmup, 0):
    jax.block_until_ready(call(i))
  times = []
  for i in range(num_calls):
    start = time.perf_counter()
    jax.block_until_ready(call(i))
    times.append(time.perf_counter() - start)
  return Timing(compile_s=compile_s, times_s=tuple(times))
