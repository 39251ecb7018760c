"""Plots RL training curves of several runs, one line per run (variant).

  python -m launch.plot_rl --out=results/scientific/rl_curves.png \\
      --runs=beam_grpo=runs/sci/ablation/beam_grpo_s0,vstar=runs/sci/ablation/vstar_s0

Reads each run's WORKDIR/metrics.jsonl (written by launch.train) and draws
reward, target-in-group rate, all-zero-advantage fraction, KL to the
reference and validation-subset NDCG@10 against the RL step. Runs given as
NAME=DIR; several seeds of one variant may share a NAME (their curves are
averaged per logged step).
"""
import collections
import io
import json
import os
import sys

from absl import app
from absl import flags

from vstar_jax import errors
from vstar_jax.data import files

_RUNS = flags.DEFINE_list('runs', None, 'NAME=WORKDIR items.', required=True)
_OUT = flags.DEFINE_string('out', None, 'PNG file to write.', required=True)
_TITLE = flags.DEFINE_string('title', 'RL curves', 'Figure title.')

PANELS = (('rl/reward', 'reward (ranking)'),
          ('rl/target_in_group', 'target-in-group rate'),
          ('rl/zero_adv_frac', 'all-zero-advantage groups'),
          ('rl/kl', 'KL to reference (k3)'),
          ('rl/valid_subset/ndcg@10', 'valid-subset NDCG@10'))


def read_curves(workdir: str) -> dict[str, dict[int, float]]:
  """{metric: {step: value}} from WORKDIR/metrics.jsonl."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise errors.DataError(f'{path}: not found; is {workdir} a run?')
  curves = collections.defaultdict(dict)
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      try:
        record = json.loads(line)
        step = int(record.pop('step'))
      except (ValueError, KeyError):
        raise errors.DataError(
            f'{path}: line {line_no}: not a metrics record with a "step"'
        ) from None
      for key, value in record.items():
        curves[key][step] = float(value)
  return curves


def mean_curves(runs: list[dict]) -> dict[str, tuple[list, list]]:
  """Per metric, steps logged by every run and the mean over runs."""
  out = {}
  for key, _ in PANELS:
    steps = sorted(set.intersection(*(set(r.get(key, {})) for r in runs)))
    if steps:
      out[key] = (steps, [sum(r[key][s] for r in runs) / len(runs)
                          for s in steps])
  return out


def plot(named: dict[str, list[dict]], title: str) -> bytes:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(PANELS), figsize=(20, 3.6))
  for name, runs in named.items():
    curves = mean_curves(runs)
    for ax, (key, _) in zip(axes, PANELS):
      if key in curves:
        ax.plot(*curves[key], '.-', label=f'{name} (n={len(runs)})')
  for ax, (_, label) in zip(axes, PANELS):
    ax.set_title(label, fontsize=10)
    ax.set_xlabel('RL step')
  axes[0].legend(fontsize=8)
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  return buf.getvalue()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  named = collections.defaultdict(list)
  try:
    for item in _RUNS.value:
      name, sep, workdir = item.partition('=')
      if not sep:
        raise errors.DataError(f'--runs item {item!r}: expected NAME=WORKDIR')
      named[name].append(read_curves(workdir))
  except errors.DataError as e:
    print(f'plot_rl: error: {e}', file=sys.stderr)
    sys.exit(1)
  png = plot(named, _TITLE.value)
  files.write_files({_OUT.value: png})
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
