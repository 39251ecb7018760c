r"""Benchmarks the prefix trie: host build time and memory, device table
bytes, and the jitted mask gather for a batch of random prefixes per level.

  python -m launch.benchmark_trie --num_items=1000000 --num_levels=3 \
      --vocab_size=256 --out=results/trie_benchmark_cpu.json

Memory: `rss_peak_delta_mib` is the process's peak RSS after the build minus
its RSS just before (an upper bound on the build's own peak if an earlier
phase peaked higher); `host_peak_mib` is tracemalloc's peak of Python/numpy
allocations during a second, identical build.
"""
import resource
import time
import tracemalloc

from absl import app
from absl import flags
import jax
import numpy as np

from vstar_jax.data import files
from vstar_jax.sid import trie

_NUM_ITEMS = flags.DEFINE_integer('num_items', 1_000_000, 'Catalogue size N.')
_NUM_LEVELS = flags.DEFINE_integer('num_levels', 3, 'SID levels L.')
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 256, 'Codes per level V.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 4096,
                                   'Prefixes per mask gather.')
_NUM_REPEATS = flags.DEFINE_integer('num_repeats', 50,
                                    'Timed gathers per level.')
_SEED = flags.DEFINE_integer('seed', 0, 'numpy seed of the catalogue.')
_OUT = flags.DEFINE_string('out', None, 'JSON output file.')

_MIB = 2 ** 20


def _rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux KiB


def random_unique_codes(rng: np.random.Generator, num_items: int,
                        num_levels: int, vocab_size: int) -> np.ndarray:
  """num_items distinct SIDs drawn uniformly from V^L, as [N, L] int32."""
  flat = rng.choice(vocab_size ** num_levels, num_items, replace=False)
  digits = [(flat // vocab_size ** (num_levels - 1 - l)) % vocab_size
            for l in range(num_levels)]
  return np.stack(digits, axis=1).astype(np.int32)


def _time_gathers(catalogue, rng, level):
  fn = jax.jit(lambda t, p: trie.valid_next_mask(t, level, p))
  num_prefixes = catalogue.num_prefixes[level]
  batches = [jax.device_put(rng.integers(
      0, num_prefixes, _BATCH_SIZE.value, dtype=np.int32))
             for _ in range(_NUM_REPEATS.value + 1)]
  start = time.perf_counter()
  fn(catalogue, batches[0]).block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for batch in batches[1:]:
    start = time.perf_counter()
    fn(catalogue, batch).block_until_ready()
    times.append(time.perf_counter() - start)
  return {'level': level, 'num_prefixes': num_prefixes,
          'first_call_s': compile_s,
          'median_us': float(np.median(times) * 1e6),
          'p90_us': float(np.percentile(times, 90) * 1e6)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  rng = np.random.default_rng(_SEED.value)
  start = time.perf_counter()
  codes = random_unique_codes(rng, _NUM_ITEMS.value, _NUM_LEVELS.value,
                              _VOCAB_SIZE.value)
  generate_s = time.perf_counter() - start

  rss_before = _rss_bytes()
  start = time.perf_counter()
  catalogue = trie.build_trie(codes, vocab_size=_VOCAB_SIZE.value)
  jax.block_until_ready(catalogue)
  build_s = time.perf_counter() - start
  rss_peak_delta = _peak_rss_bytes() - rss_before

  del catalogue
  tracemalloc.start()
  catalogue = trie.build_trie(codes, vocab_size=_VOCAB_SIZE.value)
  jax.block_until_ready(catalogue)
  _, host_peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()

  gathers = [_time_gathers(catalogue, rng, level)
             for level in range(catalogue.num_levels)]
  result = {
      'num_items': _NUM_ITEMS.value, 'num_levels': _NUM_LEVELS.value,
      'vocab_size': _VOCAB_SIZE.value, 'batch_size': _BATCH_SIZE.value,
      'device': str(jax.devices()[0]),
      'generate_s': generate_s, 'build_s': build_s,
      'rss_peak_delta_mib': rss_peak_delta / _MIB,
      'host_peak_mib': host_peak / _MIB,
      'device_mib': catalogue.nbytes / _MIB,
      'table_mib': [t.nbytes / _MIB for t in catalogue.children],
      'num_prefixes': list(catalogue.num_prefixes),
      'mask_gather': gathers,
  }
  lines = [
      f'Trie benchmark: N={result["num_items"]:,}, L={result["num_levels"]},'
      f' V={result["vocab_size"]}, {result["device"]}', '',
      '| metric | value |', '| --- | --- |',
      f'| build time (s) | {build_s:.2f} |',
      f'| peak RSS delta (MiB) | {result["rss_peak_delta_mib"]:.0f} |',
      f'| tracemalloc host peak (MiB) | {result["host_peak_mib"]:.0f} |',
      f'| device bytes, all leaves (MiB) | {result["device_mib"]:.1f} |',
      f'| prefixes P_l | {result["num_prefixes"]} |',
  ]
  for g in gathers:
    lines.append(
        f'| mask gather level {g["level"]}, batch {_BATCH_SIZE.value} '
        f'(median / p90 us) | {g["median_us"]:.0f} / {g["p90_us"]:.0f} |')
  print('\n'.join(lines))
  if _OUT.value:
    files.write_files({_OUT.value: files.encode_json(result, indent=1)})


if __name__ == '__main__':
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.config_with_absl()
  app.run(main)
