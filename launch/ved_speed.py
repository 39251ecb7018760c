r"""Wall and CPU time of the rollout alone: beam search vs the superset VED.

  python -m launch.ved_speed --workdir=runs/sci/vpre --stage=rl

For each budget (beam widths 16 / 24 / 32 by default) times beam search of
that width (its top G) and the superset VED at the same decoder-token
budget (walk and tree selection), no diagnostics, on --num_batches batches
of --batch_size training prompts: best of --repeats passes, per prompt,
compile excluded. CPU time (process time, all threads) is less sensitive to
other load on a shared machine than wall time; both are printed (and with
--out=PREFIX written to PREFIX.json and PREFIX.md). --model_size=tiger times
a randomly initialised model of that size on the run's data and trie.
"""
import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from launch.configs import common
from vstar_jax import errors
from vstar_jax import experiment
from vstar_jax.bench import machine as bench_machine
from vstar_jax.decoding import beam
from vstar_jax.decoding import transformer
from vstar_jax.decoding.ved import search
from vstar_jax.train import evaluation
from vstar_jax.train import recommender

_WORKDIR = flags.DEFINE_string('workdir', None, 'A launch.train run.',
                               required=True)
_STAGE = flags.DEFINE_string('stage', 'sft', 'Checkpoint stage.')
_WIDTHS = flags.DEFINE_list('beam_widths', ['16', '24', '32'],
                            'Budgets as beam widths.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Prompts per call.',
                              lower_bound=1)
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 4, 'Batches per pass.',
                                    lower_bound=1)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Passes; the best counts.',
                                lower_bound=1)
_GROUP = flags.DEFINE_integer('num_candidates', 16, 'Group size G.',
                              lower_bound=1)
_MODEL_SIZE = flags.DEFINE_enum(
    'model_size', None, sorted(common.MODEL_SIZES),
    'Time this size (launch/configs/common.py MODEL_SIZES), randomly '
    'initialised, on the run\'s data and trie instead of its trained '
    'parameters: the searches are fixed-shape, so their cost does not '
    'depend on training.')
_OUT = flags.DEFINE_string('out', None, 'Also write OUT.json and OUT.md.')


def _best_ms(fn, batches, repeats):
  """(wall ms, CPU ms) per prompt, each the best pass."""
  jax.block_until_ready(fn(*batches[0]))          # compile, warm up
  walls, cpus = [], []
  num = sum(b[0].shape[0] for b in batches)
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
      jax.block_until_ready(fn(*b))
    walls.append((time.perf_counter() - wall) / num * 1e3)
    cpus.append((time.process_time() - cpu) / num * 1e3)
  return min(walls), min(cpus)


def main(argv):
  del argv
  try:
    widths = [int(w) for w in _WIDTHS.value]
    if _OUT.value and not os.path.isdir(os.path.dirname(_OUT.value) or '.'):
      raise ValueError(f'--out={_OUT.value}: its folder does not exist')
    config = evaluation.load_run_config(_WORKDIR.value, common.base_config())
    if _MODEL_SIZE.value:
      config = _resized(config, _MODEL_SIZE.value)
    exp = experiment.load_experiment(config, _WORKDIR.value)
    model = recommender.from_config(config, exp)
    params = (model.init(jax.random.key(0)) if _MODEL_SIZE.value else
              evaluation.restore_params(config, model, _WORKDIR.value,
                                        _STAGE.value))
  except (ValueError, errors.DataError, errors.ConfigError) as e:
    print(f'ved_speed: {e}', file=sys.stderr)
    sys.exit(1)
  net, trie, g = model.net, exp.trie, _GROUP.value
  train = exp.split.train
  rows = np.random.default_rng(0).permutation(len(train))[
      :_BATCH.value * _NUM_BATCHES.value]
  batches = [jax.device_put((train.history[rows[i:i + _BATCH.value]],
                             train.history_mask[rows[i:i + _BATCH.value]]))
             for i in range(0, len(rows), _BATCH.value)]
  lines = ['| budget | method | wall ms / prompt | CPU ms / prompt | x beam '
           '(wall) | x beam (CPU) |', '|---|---|---|---|---|---|']
  print('\n'.join(lines))
  rows = []
  for width in widths:
    budget = beam.decode_cost(trie.num_levels, width)
    fns = {'beam': jax.jit(lambda h, m, w=width: beam.beam_candidates(
        net, params, trie, h, m, beam_width=w, num_candidates=g))}
    for selection in search.SELECTIONS:
      cfg = search.preset('superset', budget=budget, num_candidates=g,
                          selection=selection)
      fns[f'superset {selection}'] = jax.jit(
          lambda h, m, cfg=cfg: transformer.ved_decode(
              net, params, trie, jax.random.key(0), h, m, cfg=cfg)[0])
    times = {name: _best_ms(fn, batches, _REPEATS.value)
             for name, fn in fns.items()}
    for name, (wall, cpu) in times.items():
      rows.append(dict(budget=budget, method=name, wall_ms=wall, cpu_ms=cpu,
                       wall_x_beam=wall / times['beam'][0],
                       cpu_x_beam=cpu / times['beam'][1]))
      lines.append(f'| {budget} | {name} | {wall:.2f} | {cpu:.2f} | '
                   f'{wall / times["beam"][0]:.2f} | '
                   f'{cpu / times["beam"][1]:.2f} |')
      print(lines[-1], flush=True)
  if _OUT.value:
    size = _MODEL_SIZE.value or 'the run\'s trained model'
    _write(lines, rows, model_size=(
        f'{size} (width {config.model.width}, {config.model.num_layers} '
        f'layers, mlp ratio {config.model.mlp_ratio})'))


def _resized(config, size: str):
  """The run's config with another model size (a new frozen config)."""
  width, layers, heads, mlp = common.MODEL_SIZES[size]
  model = dataclasses.replace(config.model, width=width,
                              num_layers=layers, num_heads=heads,
                              mlp_ratio=mlp, value_width=width)
  return dataclasses.replace(config, model=model)


def _write(lines, rows, *, model_size):
  machine = bench_machine.describe_machine()
  command = 'python -m launch.ved_speed ' + ' '.join(sys.argv[1:])
  header = [f'`{command}`', '',
            f"{machine['date_utc']}, {machine['cpu_model']} "
            f"({machine['num_cpus_usable']} cores, load "
            f"{machine['load_avg_1_5_15']}), model "
            f'{model_size}; best of {_REPEATS.value} passes over '
            f'{_NUM_BATCHES.value} x {_BATCH.value} training prompts, '
            'compile excluded.', '']
  with open(_OUT.value + '.md', 'w') as f:
    f.write('\n'.join(header + lines) + '\n')
  with open(_OUT.value + '.json', 'w') as f:
    json.dump(dict(command=command, machine=machine, model_size=model_size,
                   workdir=_WORKDIR.value, rows=rows), f, indent=1)


if __name__ == '__main__':
  app.run(main)
