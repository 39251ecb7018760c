r"""Decode and SFT-training benchmarks on a real catalogue.

  python -m launch.benchmark --suite=decode \
      --out=results/benchmarks/decode_cpu.json
  python -m launch.benchmark --suite=train \
      --out=results/benchmarks/train_cpu.json

decode: users/s of trie-constrained beam search (beam 10 and 50) on
  leave-one-out test histories, against the unconstrained search, a host
  dict-trie reference and the FLOP floor.
train: SFT step examples/s and FLOP/s as a fraction of the matmul peak, with
  ablations (--ablations=false to skip them); the SFT and RL (beam and VED
  rollouts) steps at N = --steps_per_call steps per jitted call, and one
  whole SFT epoch end to end at N=1 and the best N (--epoch).

Prints a Markdown table and writes the JSON (with the machine description)
and the same table as a .md beside it. The measuring code lives in
vstar_jax/bench/.
"""
import dataclasses
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from launch.configs import common
from launch.configs import scientific
from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax import data
from vstar_jax.bench import flops
from vstar_jax.bench import machine
from vstar_jax.bench import report
from vstar_jax.bench import rollout_compare
from vstar_jax.bench import suites
from vstar_jax.models import policy
from vstar_jax import experiment
from vstar_jax.data import files
from vstar_jax.decoding import beam as beam_lib
from vstar_jax.decoding.ved import search
from vstar_jax.train import evaluation
from vstar_jax.train import recommender
from vstar_jax.sid import trie as trie_lib

_SCIENTIFIC = '../shared/data/amazon_scientific'
_SUITE = flags.DEFINE_enum('suite', None, ['decode', 'train', 'ved'],
                           'Suite.', required=True)
_OUT = flags.DEFINE_string('out', None, 'JSON result file (.json); the table '
                           'goes to the same path with .md.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', _SCIENTIFIC, 'Dataset folder.')
_DATASET = flags.DEFINE_string('dataset', 'Scientific', 'Dataset file stem.')
_INDEX = flags.DEFINE_string(
    'index_path', f'{_SCIENTIFIC}/indexes/rqvae_zcr/Scientific.index.json.gz',
    'SID index (unique SIDs); empty: <dataset>.index.json in --data_dir.')
_MAX_HISTORY = flags.DEFINE_integer('max_history', 20, 'History length T.',
                                    lower_bound=1)
_WIDTH = flags.DEFINE_integer('width', 128, 'Model width D.', lower_bound=1)
_NUM_LAYERS = flags.DEFINE_integer('num_layers', 2, 'Transformer layers.',
                                   lower_bound=1)
_NUM_HEADS = flags.DEFINE_integer('num_heads', 4, 'Attention heads.',
                                  lower_bound=1)
_DROPOUT = flags.DEFINE_float('dropout_rate', 0.1, 'Dropout (train suite).',
                              lower_bound=0., upper_bound=0.9)
_BEAM_WIDTHS = flags.DEFINE_list('beam_widths', ['10', '50'],
                                 'Beam widths K (decode suite).')
_NUM_USERS = flags.DEFINE_integer('num_users', 256, 'Users per decode batch.',
                                  lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'SFT batch size.',
                                   lower_bound=1)
_DTYPES = flags.DEFINE_list('dtypes', ['float32'],
                            'Compute dtypes of the SFT step (train suite), '
                            'e.g. float32,bfloat16.')
_ABLATIONS = flags.DEFINE_bool('ablations', True,
                               'Train suite: also time ablations.')
_PROFILE = flags.DEFINE_bool(
    'profile', True, 'Trace our search / the SFT step with jax.profiler and '
    'report the share of op time per category (CPU backend only: the '
    'grouping reads the CPU runtime\'s per-HLO-op trace events).')
_NUM_REPEATS = flags.DEFINE_integer('num_repeats', 5,
                                    'Timed calls per measurement.',
                                    lower_bound=1)
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048,
                                    'n of the n^3 peak-FLOP/s matmul.',
                                    lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Parameter and shuffle seed.')
_STEPS_PER_CALL = flags.DEFINE_list(
    'steps_per_call', ['1', '8', '64', '256'],
    'train: N steps per jitted call (the N column; empty: none).')
_FUSED_REPEATS = flags.DEFINE_integer(
    'fused_repeats', 3, 'train: timed calls per N.', lower_bound=1)
_RL_BATCH_SIZE = flags.DEFINE_integer('rl_batch_size', 64,
                                      'train: RL prompts per step.',
                                      lower_bound=1)
_ROLLOUTS = flags.DEFINE_list('rollouts', ['beam', 'ved'],
                              'train: RL rollout kinds of the N column.')
_EPOCH = flags.DEFINE_bool('epoch', True, 'train: time one whole SFT epoch '
                           'at the first N and the best N.')
# Suite ved: rollouts of a trained run at equal decoder-token budgets.
_WORKDIR = flags.DEFINE_string('workdir', None, 'ved: a launch.train run.')
_STAGE = flags.DEFINE_string('stage', 'sft', 'ved: checkpoint stage.')
_BUDGETS = flags.DEFINE_list('budgets', [], 'ved: decoder-token budgets per '
                             'prompt; default: the cost of beam 16, 24, 32.')
_NUM_PROMPTS = flags.DEFINE_integer('num_prompts', 512,
                                    'ved: training prompts measured.',
                                    lower_bound=1)
_ROLLOUT_BATCH = flags.DEFINE_integer('rollout_batch', 64,
                                      'ved: prompts per call.', lower_bound=1)
_GROUP = flags.DEFINE_integer('num_candidates', 16, 'ved: group size G.',
                              lower_bound=1)
_METHODS = flags.DEFINE_list(
    'methods', list(rollout_compare.METHODS),
    f'ved: rows per budget, of {list(rollout_compare.METHODS)}.')
_PROMPTS = flags.DEFINE_enum(
    'prompts', 'train', ['train', 'valid'],
    'ved: prompts from the training windows (to choose a configuration) or '
    'the validation split (to report it).')
_NODES_PER_ITER = flags.DEFINE_integer(
    'ved_nodes_per_iter', None, 'ved: m for every VED row (default: each '
    'preset\'s).', lower_bound=1)
_TEMPERATURE = flags.DEFINE_float('temperature', 1.0,
                                  'ved: sampling temperature.')
_LAMBDA = flags.DEFINE_float('ved_lambda', None, 'ved: entropy weight lambda '
                             '(default: the run config\'s).')
_BETA = flags.DEFINE_float('ved_beta', None, 'ved: UCB weight beta (default: '
                           'the run config\'s).')


class _UsageError(ValueError):
  """A bad flag value; str is one line."""


def _profile() -> bool:
  if _PROFILE.value and jax.default_backend() != 'cpu':
    logging.warning('--profile: op-time categories need the CPU backend; '
                    'skipped on %s', jax.default_backend())
    return False
  return _PROFILE.value


def _int_list(name: str, values: list[str]) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in values)
  except ValueError:
    raise _UsageError(f'--{name}: expected integers, got {values}') from None
  if not out or min(out) < 1:
    raise _UsageError(f'--{name}: expected positive integers, got {values}')
  return out


def _load():
  ds = data.load_dataset(_DATA_DIR.value, _DATASET.value,
                         index_path=_INDEX.value or None)
  if ds.sids is None:
    raise _UsageError(f'{_DATA_DIR.value}: dataset {_DATASET.value} has no '
                      'SID index; pass --index_path')
  split = data.leave_one_out_split(ds, max_history=_MAX_HISTORY.value)
  return ds, split, trie_lib.build_trie(ds.sids)


def _rl_setup(num_levels: int) -> suites.RlSetup:
  """RL objective and rollouts of launch/configs/scientific.py (one step
  weight per level: the beauty config's L=4 weights, else equal ones)."""
  config = scientific.get_config()
  config.rl.step_weights = ((0.2, 0.3, 0.5, 1.0) if num_levels == 4 else
                            (1.0,) * num_levels)
  cfg = config_lib.parse(config)
  rollouts = {
      kind: config_lib.rollout_config(
          dataclasses.replace(cfg, rollout=dataclasses.replace(
              cfg.rollout, kind=kind)), num_levels)
      for kind in _ROLLOUTS.value}
  return suites.RlSetup(
      rl_config=config_lib.rl_config(cfg), rollout_configs=rollouts,
      learning_rate=cfg.rl.learning_rate,
      value_learning_rate=cfg.rl.value_learning_rate)


def _run() -> dict:
  out = pathlib.Path(_OUT.value)
  if out.suffix != '.json':
    raise _UsageError(f'--out must end in .json, got {out}')
  for dtype in _DTYPES.value:
    if dtype not in ('float32', 'bfloat16'):
      raise _UsageError(f'--dtypes: float32 or bfloat16, got {dtype!r}')
  beam_widths = _int_list('beam_widths', _BEAM_WIDTHS.value)
  steps_per_call = (_int_list('steps_per_call', _STEPS_PER_CALL.value)
                    if _STEPS_PER_CALL.value else ())
  for kind in _ROLLOUTS.value:
    if kind not in ('beam', 'ved', 'sample'):
      raise _UsageError(f'--rollouts: beam, ved or sample, got {kind!r}')
  if _WIDTH.value % _NUM_HEADS.value:
    raise _UsageError(f'--width={_WIDTH.value} is not divisible by '
                      f'--num_heads={_NUM_HEADS.value}')
  ds, split, trie = _load()
  cfg = policy.PolicyConfig(
      num_levels=trie.num_levels, vocab_size=trie.vocab_size,
      max_history=_MAX_HISTORY.value, width=_WIDTH.value,
      num_layers=_NUM_LAYERS.value, num_heads=_NUM_HEADS.value,
      dropout_rate=_DROPOUT.value,
      mlp_ratio=4, value_width=128, value_grad_to_trunk=True, dtype='float32')
  setup = (f'{ds.name}: {ds.num_items:,} items, L={trie.num_levels}, '
           f'V={trie.vocab_size} ({ds.paths["index"]}); model width '
           f'{cfg.width}, {cfg.num_layers} layers, {cfg.num_heads} heads, '
           f'history {cfg.max_history}; {_NUM_REPEATS.value} timed calls, '
           'median')
  peaks_for = {'float32'} | (set(_DTYPES.value) if _SUITE.value == 'train'
                             else set())
  with machine.CpuShare() as share:
    description = machine.describe_machine()
    peak = {d: flops.measure_matmul_flops(_MATMUL_SIZE.value,
                                          dtype=jnp.dtype(d))
            for d in sorted(peaks_for)}
    if _SUITE.value == 'decode':
      net = policy.PolicyValueNet(cfg)
      params = jax.jit(policy.init_params, static_argnums=0)(
          cfg, jax.random.key(_SEED.value))
      settings = suites.DecodeSettings(
          beam_widths=beam_widths,
          num_users=_NUM_USERS.value, num_repeats=_NUM_REPEATS.value,
          profile=_profile())
      result = suites.run_decode_suite(
          net, params, trie, ds.sids, split.test, settings=settings,
          peak_flops=peak['float32'])
      setup += f', {settings.num_users} users per batch (test histories)'
    else:
      settings = suites.TrainSettings(
          batch_size=_BATCH_SIZE.value, num_repeats=_NUM_REPEATS.value,
          dtypes=tuple(_DTYPES.value), ablations=_ABLATIONS.value,
          profile=_profile(), seed=_SEED.value,
          steps_per_call=steps_per_call,
          fused_repeats=_FUSED_REPEATS.value,
          rl_batch_size=_RL_BATCH_SIZE.value,
          rollouts=tuple(_ROLLOUTS.value), epoch=_EPOCH.value)
      result = suites.run_train_suite(cfg, trie, split.train,
                                      settings=settings, peak_flops=peak)
      if settings.steps_per_call:
        result.update(suites.run_steps_per_call_suite(
            cfg, trie, split.train, settings=settings,
            rl=_rl_setup(trie.num_levels)))
      setup += (f', batch {settings.batch_size} training windows, dropout '
                f'{cfg.dropout_rate}')
    # Again at the end: a shared machine's load may have changed meanwhile.
    peak_after = {d: flops.measure_matmul_flops(_MATMUL_SIZE.value,
                                                dtype=jnp.dtype(d))
                  for d in sorted(peaks_for)}
  result.update(
      suite=_SUITE.value, command=' '.join(['python -m launch.benchmark'] +
                                           sys.argv[1:]),
      machine=description, load_avg_after=machine.describe_machine()[
          'load_avg_1_5_15'],
      cpu_other_share=share.other_share, setup=setup,
      model_config=dataclasses.asdict(cfg), matmul_flops_per_s=peak,
      matmul_flops_per_s_after=peak_after, matmul_size=_MATMUL_SIZE.value)
  return result


def _run_ved() -> tuple[dict, bytes]:
  """Rollout comparison on a trained run; returns (result, PNG bytes)."""
  if not _WORKDIR.value:
    raise _UsageError('--suite=ved needs --workdir (a launch.train run)')
  config = evaluation.load_run_config(_WORKDIR.value, common.base_config())
  exp = experiment.load_experiment(config, _WORKDIR.value)
  model = recommender.from_config(config, exp)
  params = evaluation.restore_params(config, model, _WORKDIR.value,
                                     _STAGE.value)
  num_levels = exp.num_levels
  budgets = (_int_list('budgets', _BUDGETS.value) if _BUDGETS.value else
             tuple(beam_lib.decode_cost(num_levels, w) for w in (16, 24, 32)))
  unknown = sorted(set(_METHODS.value) - set(rollout_compare.METHODS))
  if unknown:
    raise _UsageError(f'--methods: unknown {unknown}; expected some of '
                      f'{list(rollout_compare.METHODS)}')
  rng = np.random.default_rng(_SEED.value)
  split = exp.split.train if _PROMPTS.value == 'train' else exp.split.valid
  rows_idx = np.sort(rng.permutation(len(split))[:_NUM_PROMPTS.value])
  prompts = rollout_compare.Prompts(
      history=split.history[rows_idx],
      history_mask=split.history_mask[rows_idx],
      target=split.target[rows_idx])
  ved_overrides = ({} if _NODES_PER_ITER.value is None else
                   {'nodes_per_iter': _NODES_PER_ITER.value})
  lam = config.rollout.ved_lambda if _LAMBDA.value is None else _LAMBDA.value
  beta = config.rollout.ved_beta if _BETA.value is None else _BETA.value
  with machine.CpuShare() as share:
    description = machine.describe_machine()
    try:
      rows = rollout_compare.compare(
          model.net, params, exp.trie, prompts, exp.long_tail,
          budgets=budgets, methods=_METHODS.value,
          num_candidates=_GROUP.value, temperature=_TEMPERATURE.value,
          lam=lam, beta=beta, batch_size=_ROLLOUT_BATCH.value,
          reward=config.rl.reward, seed=_SEED.value,
          ved_overrides=ved_overrides)
    except ValueError as e:
      raise _UsageError(str(e)) from None
  result = {
      'suite': 'ved', 'rows': rows, 'workdir': _WORKDIR.value,
      'stage': _STAGE.value, 'dataset': exp.dataset.name,
      'num_levels': num_levels, 'group_size': _GROUP.value,
      'ved_variants': {m: rollout_compare.VED_VARIANTS[m]
                       for m in _METHODS.value
                       if m in rollout_compare.VED_VARIANTS},
      'ved_presets': search.PRESETS, 'ved_overrides': ved_overrides,
      'temperature': _TEMPERATURE.value,
      'ved_lambda': lam, 'ved_beta': beta,
      'reward': config.rl.reward,
      'prompts': {'train': 'training windows',
                  'valid': 'validation prompts'}[_PROMPTS.value],
      'command': ' '.join(['python -m launch.benchmark'] + sys.argv[1:]),
      'machine': description, 'cpu_other_share': share.other_share,
      'load_avg_after': machine.describe_machine()['load_avg_1_5_15']}
  return result, report.ved_plot(result)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  png = None
  try:
    if _SUITE.value == 'ved':
      result, png = _run_ved()
    else:
      result = _run()
  except (_UsageError, errors.DataError, errors.ConfigError) as e:
    print(f'benchmark: {e}', file=sys.stderr)
    sys.exit(1)
  markdown = {'decode': report.decode_markdown, 'train': report.train_markdown,
              'ved': report.ved_markdown}[result['suite']]
  table = markdown(result)
  print(table)
  out = pathlib.Path(_OUT.value)
  outputs = {out: files.encode_json(result, indent=1),
             out.with_suffix('.md'): table.encode('utf-8')}
  if png is not None:
    outputs[out.with_suffix('.png')] = png
  files.write_files(outputs)


if __name__ == '__main__':
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.config_with_absl()
  app.run(main)
