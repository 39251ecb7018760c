r"""Scale figures: step time vs device count, FLOPs, pod estimates.

  python -m launch.scale_bench --out=results/benchmarks/scale_cpu.json

1. SFT and RL (VED rollout) step time on meshes of 1, 2, 4 and 8 fake CPU
   devices (--num_cpu_devices), data-parallel and FSDP, each step under
   jax.transfer_guard('disallow') and with its traces counted: a check that
   sharding adds no recompilation or host syncs. The fake devices share this
   machine's cores, so more devices are not faster.
2. FLOPs per SFT example and per RL prompt (XLA cost_analysis on one device;
   see vstar_jax/bench/scale.py) for the TIGER-scale model and a
   ~100M-parameter one, on Beauty-shaped SIDs (L=4, V=256, T=20), and from
   them examples/s and time per epoch of Beauty's training windows on a
   v5e-64 slice and an 8xH100 node at an ASSUMED utilisation (--mfu).

Writes the JSON (with the machine description) and a Markdown table (.md).
"""
import dataclasses
import functools
import pathlib

from absl import app
from absl import flags
import jax

from vstar_jax.bench import machine
from vstar_jax.bench import scale
from vstar_jax.data import files
from vstar_jax.models import policy

_OUT = flags.DEFINE_string('out', None, 'JSON result file (.json); the table '
                           'goes to the same path with .md.', required=True)
_NUM_CPU_DEVICES = flags.DEFINE_integer(
    'num_cpu_devices', 8, 'Fake CPU devices (CPU backend only).',
    lower_bound=1)
_DEVICE_COUNTS = flags.DEFINE_list('device_counts', ['1', '2', '4', '8'],
                                   'Mesh sizes to time.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', 5, 'Timed steps per mesh.',
                                  lower_bound=1)
_MFU = flags.DEFINE_float('mfu', 0.2, 'Assumed fraction of the bf16 peak '
                          'for the estimates.', lower_bound=0.01,
                          upper_bound=1.0)
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', 131413, 'Examples per epoch for the estimates '
    '(Beauty leave-one-out training windows).', lower_bound=1)

# The timing model: small enough for CPU; Beauty-shaped SIDs.
_TIMING_CFG = policy.PolicyConfig(num_levels=4, vocab_size=256,
                                  max_history=20, width=64, num_layers=2,
                                  num_heads=4, value_width=64,
                                  mlp_ratio=4, dropout_rate=0.1,
                                  value_grad_to_trunk=True, dtype='float32')
# name -> (width, layers, heads, mlp ratio); 'tiger' is common.MODEL_SIZES'.
_ESTIMATE_SIZES = {'tiger': (128, 6, 4, 8), '100m': (768, 14, 12, 4)}


def _table(result) -> str:
  lines = [
      f'Machine: {result["machine"]["cpu_model"]}, '
      f'{result["machine"]["num_cpus_usable"]} usable cores, '
      f'{result["num_cpu_devices"]} fake CPU devices; load average '
      f'{result["machine"]["load_avg_1_5_15"]}.', '',
      '| devices | FSDP | SFT step ms (B=%d) | SFT traces | RL step ms '
      '(B=%d, G=%d, VED) | RL traces |' % (
          result['timing_workload']['sft_batch'],
          result['timing_workload']['rl_batch'],
          result['timing_workload']['num_candidates']),
      '|---|---|---|---|---|---|']
  for r in result['mesh_timings']:
    lines.append(f'| {r["num_devices"]} | {r["fsdp"]} | '
                 f'{1e3 * r["sft"]["median_s"]:.1f} | {r["sft"]["traces"]} | '
                 f'{1e3 * r["rl"]["median_s"]:.1f} | {r["rl"]["traces"]} |')
  lines += ['', f'FLOP-bound estimates at an assumed {result["mfu"]:.0%} of '
            f'the bf16 peak, {result["train_examples"]} examples per epoch '
            '(upper bounds: small models are latency-bound, not FLOP-bound):',
            '',
            '| model | params | GFLOP/SFT example | GFLOP/RL prompt | pool | '
            'SFT examples/s | SFT epoch | RL prompts/s | RL epoch |',
            '|---|---|---|---|---|---|---|---|---|']
  for name, e in result['estimates'].items():
    for pool in scale.POOLS:
      s, r = e['sft'][pool], e['rl'][pool]
      lines.append(
          f'| {name} | {e["num_params"] / 1e6:.1f}M | '
          f'{e["flops"]["sft_per_example"] / 1e9:.3f} | '
          f'{e["flops"]["rl_per_prompt"] / 1e9:.3f} | {pool} | '
          f'{s["examples_per_s"]:,.0f} | {s["epoch_s"]:.2g} s | '
          f'{r["examples_per_s"]:,.0f} | {r["epoch_s"]:.2g} s |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.update('jax_num_cpu_devices', _NUM_CPU_DEVICES.value)
  counts = [int(c) for c in _DEVICE_COUNTS.value]
  if max(counts) > jax.device_count():
    raise app.UsageError(f'--device_counts={counts} exceeds the '
                         f'{jax.device_count()} devices')
  timing_w = scale.Workload(cfg=_TIMING_CFG)
  timings = []
  for fsdp in (False, True):
    for n in counts:
      r = scale.time_steps_on_mesh(timing_w, jax.devices()[:n], fsdp=fsdp,
                                   num_steps=_NUM_STEPS.value)
      print(r, flush=True)
      timings.append(r)
  estimates = {}
  for name, (width, layers, heads, mlp) in _ESTIMATE_SIZES.items():
    cfg = dataclasses.replace(_TIMING_CFG, width=width, num_layers=layers,
                              num_heads=heads, mlp_ratio=mlp,
                              value_width=width)
    w = scale.Workload(cfg=cfg, sft_batch=8, rl_batch=4)
    f = scale.flops_per_example(w)
    num_params = policy.num_params(jax.eval_shape(
        functools.partial(policy.init_params, cfg), jax.random.key(0)))
    estimates[name] = {
        'config': dataclasses.asdict(cfg), 'num_params': num_params,
        'flops': f,
        'sft': scale.estimate(f['sft_per_example'], _TRAIN_EXAMPLES.value,
                              mfu=_MFU.value),
        'rl': scale.estimate(f['rl_per_prompt'], _TRAIN_EXAMPLES.value,
                             mfu=_MFU.value)}
    print(name, estimates[name], flush=True)
  result = {'machine': machine.describe_machine(),
            'num_cpu_devices': _NUM_CPU_DEVICES.value,
            'timing_workload': {**dataclasses.asdict(timing_w),
                                'cfg': dataclasses.asdict(timing_w.cfg)},
            'mesh_timings': timings, 'mfu': _MFU.value,
            'train_examples': _TRAIN_EXAMPLES.value, 'pools': scale.POOLS,
            'estimates': estimates}
  table = _table(result)
  out = pathlib.Path(_OUT.value)
  files.write_files({out: files.encode_json(result, indent=2),
                     out.with_suffix('.md'): (table + '\n').encode()})
  print(table)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
