r"""Benchmarks the prefix trie: host build time and memory, device table
bytes, and the jitted mask gather and child lookup (`next_prefix`) for a
batch of random prefixes per level.

  python -m launch.benchmark_trie --num_items=1000000 --num_levels=4 \
      --vocab_size=256 --last_level=sparse \
      --out=results/trie_benchmark_cpu.json

Writes the JSON and the printed Markdown table beside it (.md).

Memory: `rss_peak_delta_mib` is the process's peak RSS after the build minus
its RSS just before (an upper bound on the build's own peak if an earlier
phase peaked higher); `host_peak_mib` is tracemalloc's peak of Python/numpy
allocations during a second, identical build.
"""
import pathlib
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
_LAST_LEVEL = flags.DEFINE_enum('last_level', 'auto',
                                 ['dense', 'sparse', 'auto'],
                                 'Layout of the last level (build_trie).')
_SEED = flags.DEFINE_integer('seed', 0, 'numpy seed of the catalogue.')
_OUT = flags.DEFINE_string('out', None, 'JSON output file (.json); the table '
                           'goes beside it as .md.')

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


def _median_p90_us(fn, catalogue, batches):
  """First-call seconds and median / p90 us of fn over batches[1:]."""
  start = time.perf_counter()
  jax.block_until_ready(fn(catalogue, *batches[0]))
  first_call_s = time.perf_counter() - start
  times = []
  for batch in batches[1:]:
    start = time.perf_counter()
    jax.block_until_ready(fn(catalogue, *batch))
    times.append(time.perf_counter() - start)
  return {'first_call_s': first_call_s,
          'median_us': float(np.median(times) * 1e6),
          'p90_us': float(np.percentile(times, 90) * 1e6)}


def _time_lookups(catalogue, rng, level):
  """Mask gather and child lookup of random valid prefixes at one level."""
  num_prefixes = catalogue.num_prefixes[level]
  batches = [jax.device_put((
      rng.integers(0, num_prefixes, _BATCH_SIZE.value, dtype=np.int32),
      rng.integers(0, catalogue.vocab_size, _BATCH_SIZE.value,
                   dtype=np.int32)))
             for _ in range(_NUM_REPEATS.value + 1)]
  table = catalogue.children[level]
  return {
      'level': level, 'num_prefixes': num_prefixes,
      'layout': ('sparse' if isinstance(table, trie.SparseLevel)
                 else 'dense'),
      'mask_gather': _median_p90_us(
          jax.jit(lambda t, p, c: trie.valid_next_mask(t, level, p)),
          catalogue, batches),
      'next_prefix': _median_p90_us(
          jax.jit(lambda t, p, c: trie.next_prefix(t, level, p, c)),
          catalogue, batches)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _OUT.value and pathlib.Path(_OUT.value).suffix != '.json':
    raise app.UsageError(f'--out must end in .json, got {_OUT.value}')
  rng = np.random.default_rng(_SEED.value)
  start = time.perf_counter()
  codes = random_unique_codes(rng, _NUM_ITEMS.value, _NUM_LEVELS.value,
                              _VOCAB_SIZE.value)
  generate_s = time.perf_counter() - start

  rss_before = _rss_bytes()
  start = time.perf_counter()
  catalogue = trie.build_trie(codes, vocab_size=_VOCAB_SIZE.value,
                              last_level=_LAST_LEVEL.value)
  jax.block_until_ready(catalogue)
  build_s = time.perf_counter() - start
  rss_peak_delta = _peak_rss_bytes() - rss_before

  del catalogue
  tracemalloc.start()
  catalogue = trie.build_trie(codes, vocab_size=_VOCAB_SIZE.value,
                              last_level=_LAST_LEVEL.value)
  jax.block_until_ready(catalogue)
  _, host_peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()

  lookups = [_time_lookups(catalogue, rng, level)
             for level in range(catalogue.num_levels)]
  result = {
      'num_items': _NUM_ITEMS.value, 'num_levels': _NUM_LEVELS.value,
      'vocab_size': _VOCAB_SIZE.value, 'batch_size': _BATCH_SIZE.value,
      'last_level': _LAST_LEVEL.value, 'num_repeats': _NUM_REPEATS.value,
      'device': str(jax.devices()[0]), 'date_utc': time.strftime(
          '%Y-%m-%d %H:%M UTC', time.gmtime()),
      'generate_s': generate_s, 'build_s': build_s,
      'rss_peak_delta_mib': rss_peak_delta / _MIB,
      'host_peak_mib': host_peak / _MIB,
      'device_mib': catalogue.nbytes / _MIB,
      'table_mib': [t.nbytes / _MIB for t in catalogue.children],
      'num_prefixes': list(catalogue.num_prefixes),
      'lookups': lookups,
  }
  lines = [
      f'Trie benchmark: N={result["num_items"]:,}, L={result["num_levels"]},'
      f' V={result["vocab_size"]}, last level {_LAST_LEVEL.value} '
      f'({lookups[-1]["layout"]}), {result["device"]}, '
      f'{result["date_utc"]}', '',
      '| metric | value |', '| --- | --- |',
      f'| build time (s) | {build_s:.2f} |',
      f'| peak RSS delta (MiB) | {result["rss_peak_delta_mib"]:.0f} |',
      f'| tracemalloc host peak (MiB) | {result["host_peak_mib"]:.0f} |',
      f'| device bytes, all leaves (MiB) | {result["device_mib"]:.1f} |',
      f'| prefixes P_l | {result["num_prefixes"]} |',
  ]
  for g in lookups:
    for name in ('mask_gather', 'next_prefix'):
      lines.append(
          f'| {name} level {g["level"]} ({g["layout"]}), batch '
          f'{_BATCH_SIZE.value} (median / p90 us) | '
          f'{g[name]["median_us"]:.0f} / {g[name]["p90_us"]:.0f} |')
  table = '\n'.join(lines) + '\n'
  print(table)
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    files.write_files({out: files.encode_json(result, indent=1),
                       out.with_suffix('.md'): table.encode('utf-8')})


if __name__ == '__main__':
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.config_with_absl()
  app.run(main)
