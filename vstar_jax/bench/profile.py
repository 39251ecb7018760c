"""Where a compiled program's time goes: per-op times from a jax.profiler
trace, grouped into coarse categories by each op's source name.

XLA's CPU runtime records one trace event per executed HLO instruction
(args: hlo_module, hlo_op). The instruction's `op_name` metadata in the
compiled HLO text is the JAX name stack (e.g. `.../block_0.decode/
block_0._mlp/mlp_in/dot_general`, `transpose(jvp(...))` for the backward
pass), which `categorize` maps to a category. A fusion carries the name of
its root op, so elementwise work fused into a matmul counts as the matmul.
Ops may overlap on the CPU thread pool: shares are of summed op time.
"""
import collections
import glob
import gzip
import json
import re
import tempfile
from typing import Callable

import jax

# First match wins.
_CATEGORIES = (
    ('dropout', r'/dropout/|threefry|random_bits'),
    ('value block', r'value_block|value_ln|value_hidden'),
    ('output head', r'bkqd,ldv->bkqlv'),
    ('dense layers (qkv, out, mlp)',
     r'(qkv|/out|mlp_in|mlp_out)/dot_general'),
    ('attention (scores, softmax, values)', r'attn\.(self_)?attend'),
    ('kv cache concat', r'decode/block_\d+\.decode/concatenate'),
    ('layernorm, gelu, residuals', r'ln_|_mlp|final_ln|\.encode/|\.decode/'),
    ('embeddings', r'_embed_codes|_history_tokens|_decoder_tokens|'
                   r'recency_embed|depth_embed'),
)
OTHER = 'outside the network (beam bookkeeping, trie, loss, optimizer)'


def categorize(op_name: str) -> str:
  """Coarse category of an HLO op from its JAX name stack; '(bwd)' marks
  the backward pass."""
  backward = 'transpose(' in op_name
  for category, pattern in _CATEGORIES:
    if 'PolicyValueNet' in op_name and re.search(pattern, op_name):
      break
  else:
    category = OTHER
  return f'{category} (bwd)' if backward else category


def _op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name -> op_name metadata, for every instruction that has
  one."""
  names = {}
  for line in hlo_text.splitlines():
    match = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*?'
                     r'metadata=\{op_name="([^"]*)"', line)
    if match:
      names.setdefault(match.group(1), match.group(2))
  return names


def _trace_events(run: Callable[[], None]) -> list[dict]:
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir):
      run()
    paths = glob.glob(f'{log_dir}/**/*.trace.json.gz', recursive=True)
    if len(paths) != 1:
      raise RuntimeError(f'expected one trace file in {log_dir}, found '
                         f'{len(paths)}')
    with gzip.open(paths[0], 'rt', encoding='utf-8') as f:
      return json.load(f)['traceEvents']


def time_by_category(compiled, run: Callable[[], None]) -> dict[str, float]:
  """Traces run() and sums the op time of `compiled`'s module by category.

  Args:
    compiled: a compiled executable (jit(...).lower(...).compile()).
    run: calls it (and blocks until ready); its other work is ignored.

  Returns:
    category -> fraction of the module's summed op time, largest first.
  """
  hlo_text = compiled.as_text()
  module = re.search(r'^HloModule (\S+?)[,\s]', hlo_text, re.M).group(1)
  names = _op_names(hlo_text)
  totals = collections.Counter()
  for event in _trace_events(run):
    args = event.get('args', {})
    if event.get('ph') == 'X' and args.get('hlo_module') == module:
      op_name = names.get(args.get('hlo_op'), '')
      totals[categorize(op_name)] += event['dur']
  total = sum(totals.values())
  if not total:
    raise RuntimeError(f'the trace has no op of module {module}')
  return {k: v / total for k, v in totals.most_common()}
