"""The benchmark suites of `launch/benchmark.py`, as functions returning
JSON-ready dicts.

decode: users/s of our jitted trie-constrained beam search, against the same
  search unconstrained, over a sparse (CSR) last trie level, against a host dict-trie reference (`host_beam`), and
  against the FLOP floor (analytic FLOPs / measured matmul FLOP/s).
train: SFT steps: examples/s and achieved FLOP/s as a fraction of the
  matmul peak, with optional ablations that show where the time goes; the
  SFT and RL steps at N steps per jitted call (train/fused.py), and a whole
  SFT epoch end to end through the same calls.

Every timed call gets its own batch of real examples (placed on device
before timing); warm-up and compilation are excluded from the medians and
compile time is reported apart.
"""
import dataclasses
import functools
import time

import jax
import numpy as np

from vstar_jax.bench import flops
from vstar_jax.bench import host_beam
from vstar_jax.bench import profile
from vstar_jax.bench import timing
from vstar_jax.data import pipeline
from vstar_jax.data import splits
from vstar_jax.decoding import beam
from vstar_jax.models import policy
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.sid import trie as trie_lib
from vstar_jax.train import fused
from vstar_jax.train import sft
from vstar_jax.train import state as state_lib

# Targets of the SFT issue.
MAX_CONSTRAINED_RATIO = 1.5      # constrained / unconstrained decode time
MIN_REFERENCE_SPEEDUP = 20.0     # host dict-trie time / ours, at beam 50
REFERENCE_SPEEDUP_BEAM = 50
MIN_TRAIN_PEAK_FRACTION = 0.25   # analytic FLOP/s / matmul FLOP/s
# Target of the sparse-trie issue: sparse / dense last level decode time.
MAX_SPARSE_TRIE_RATIO = 1.2
SPARSE_TRIE_BEAM = 50


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  beam_widths: tuple[int, ...] = (10, 50)
  num_users: int = 256          # users per batch (one timed call)
  num_repeats: int = 5          # timed batches per method
  profile: bool = True          # op-time breakdown of our search


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  batch_size: int = 256
  num_repeats: int = 5          # timed steps per variant
  dtypes: tuple[str, ...] = ('float32',)
  ablations: bool = True
  profile: bool = True          # op-time breakdown of the SFT steps
  seed: int = 0
  steps_per_call: tuple[int, ...] = (1, 8, 64, 256)   # N column
  fused_repeats: int = 3        # timed calls per N
  rl_batch_size: int = 64       # prompts per RL step
  rollouts: tuple[str, ...] = ('beam', 'ved')
  epoch: bool = True            # a whole SFT epoch at N=1 and the best N


@dataclasses.dataclass(frozen=True)
class RlSetup:
  """What the RL step needs besides the policy (train suite)."""
  rl_config: rl_step_lib.RLConfig
  rollout_configs: dict[str, rollout_lib.RolloutConfig]   # by kind
  learning_rate: float
  value_learning_rate: float


def _user_batches(examples: splits.Examples, num_users: int,
                  num_batches: int):
  """num_batches consecutive [num_users] slices of the examples (wrapping
  around), as numpy (history, history_mask) pairs."""
  rows = np.arange(num_batches * num_users) % len(examples)
  return [(examples.history[r], examples.history_mask[r])
          for r in rows.reshape(num_batches, num_users)]


def _decode_one_width(net, params, trie, sparse_trie, codes, host_batches,
                      dev_batches, beam_width, settings, peak_flops):
  cfg = net.cfg
  num_users = host_batches[0][0].shape[0]
  num_history = host_batches[0][0].shape[1]
  num_repeats = settings.num_repeats
  methods = {}
  variants = (('ours', trie, True), ('ours_unconstrained', trie, False),
              ('ours_sparse_trie', sparse_trie, True))
  for name, search_trie, constrained in variants:
    search = jax.jit(functools.partial(
        beam.beam_search, net, beam_width=beam_width,
        constrained=constrained))
    compiled, compile_s = timing.compile_timed(
        search, params, search_trie, *dev_batches[0])
    call = lambda i, c=compiled, t=search_trie: c(params, t,
                                                  *dev_batches[i + 1])
    methods[name] = timing.time_calls(call, num_calls=num_repeats,
                                      compile_s=compile_s)
    if name == 'ours':
      ours = compiled
      ours_items = np.asarray(jax.device_get(call(-1).items))
      breakdown = None
      if settings.profile:   # after timing: the profiler must not perturb it
        breakdown = profile.time_by_category(compiled, lambda call=call: [
            jax.block_until_ready(call(i)) for i in range(num_repeats)])
    elif name == 'ours_sparse_trie':
      sparse_items = np.asarray(jax.device_get(call(-1).items))

  reference = host_beam.HostTrieBeamSearch(net, codes, beam_width=beam_width)
  first = timing.time_calls(lambda i: reference(params, *host_batches[0]),
                            num_calls=1, num_warmup=0)
  ref_items, _ = reference(params, *host_batches[0])
  reference.seconds = dict.fromkeys(reference.seconds, 0.)
  methods['host_dict_trie'] = timing.time_calls(
      lambda i: reference(params, *host_batches[i + 1]),
      num_calls=num_repeats, num_warmup=0,
      compile_s=first.times_s[0])
  host_split = {k: v / num_repeats / num_users
                for k, v in reference.seconds.items()}

  ours_s = methods['ours'].median_s / num_users
  minimal = flops.beam_search_flops(cfg, num_history=num_history,
                                    beam_width=beam_width, minimal=True)
  as_written = flops.beam_search_flops(cfg, num_history=num_history,
                                       beam_width=beam_width, minimal=False)
  floor_s = minimal / peak_flops
  return {
      'beam_width': beam_width,
      'decode_cost_tokens': beam.decode_cost(cfg.num_levels, beam_width),
      'methods': {
          name: dict(t.to_json(),
                     users_per_s=num_users / t.median_s,
                     s_per_user=t.median_s / num_users)
          for name, t in methods.items()},
      'constrained_over_unconstrained': (
          methods['ours'].median_s / methods['ours_unconstrained'].median_s),
      'reference_over_ours': (methods['host_dict_trie'].median_s /
                              methods['ours'].median_s),
      'sparse_trie_over_ours': (methods['ours_sparse_trie'].median_s /
                                methods['ours'].median_s),
      'sparse_trie_same_items': int((sparse_items == ours_items).all(1).sum()),
      'reference_seconds_per_user': host_split,
      'reference_check': {
          'num_users': int(ours_items.shape[0]),
          'same_items_in_order': int((ours_items == ref_items).all(1).sum()),
          'same_item_sets': int(sum(
              set(a) == set(b) for a, b in zip(ours_items.tolist(),
                                               ref_items.tolist()))),
      },
      'flops_per_user': {
          'analytic_minimal': minimal, 'analytic_as_written': as_written,
          'xla_cost_analysis': timing.cost_flops(ours) / num_users},
      'floor_s_per_user': floor_s,
      'ours_s_per_user': ours_s,
      'ours_over_floor': ours_s / floor_s,
      'achieved_flops_per_s': minimal / ours_s,
      'ours_time_by_category': breakdown,
  }


def run_decode_suite(net: policy.PolicyValueNet, params,
                     trie: trie_lib.PrefixTrie, codes: np.ndarray,
                     examples: splits.Examples, *, settings: DecodeSettings,
                     peak_flops: float) -> dict:
  """Times our beam search, its unconstrained twin and the host reference.

  Args:
    net: the policy (its config fixes the model size).
    params: its parameters.
    trie: the catalogue trie on device.
    codes: [N, L] the same SIDs on host (for the dict trie).
    examples: users to decode (e.g. leave-one-out test), history width T.
    settings: beam widths, users per batch, timed batches.
    peak_flops: measured matmul FLOP/s for the floor.

  Returns:
    {'rows': one dict per beam width, 'targets': [...]}.
  """
  host_batches = _user_batches(examples, settings.num_users,
                               settings.num_repeats + 1)
  dev_batches = [jax.device_put(b) for b in host_batches]
  # The same catalogue with a CSR last level (trie.SparseLevel).
  sparse_trie = trie_lib.build_trie(codes, vocab_size=trie.vocab_size,
                                    last_level='sparse')
  rows = [_decode_one_width(net, params, trie, sparse_trie, codes,
                            host_batches, dev_batches, k, settings,
                            peak_flops)
          for k in settings.beam_widths]
  targets = []
  for row in rows:
    k = row['beam_width']
    targets.append(_target(
        f'beam {k}: constrained / unconstrained time',
        row['constrained_over_unconstrained'], '<=', MAX_CONSTRAINED_RATIO))
    if k == SPARSE_TRIE_BEAM:
      targets.append(_target(
          f'beam {k}: sparse-last-level trie time / dense',
          row['sparse_trie_over_ours'], '<=', MAX_SPARSE_TRIE_RATIO))
    targets.append(_target(
        f'beam {k}: users whose sparse-trie items equal ours (in order)',
        row['sparse_trie_same_items'], '>=', row['reference_check'][
            'num_users']))
    if k == REFERENCE_SPEEDUP_BEAM:
      targets.append(_target(
          f'beam {k}: host dict-trie reference time / ours',
          row['reference_over_ours'], '>=', MIN_REFERENCE_SPEEDUP))
    check = row['reference_check']
    targets.append(_target(
        f'beam {k}: users whose reference items equal ours (in order)',
        check['same_items_in_order'], '>=', check['num_users']))
  return {'rows': rows, 'targets': targets}


def _target(name, value, op, bound) -> dict:
  holds = value <= bound if op == '<=' else value >= bound
  return {'name': name, 'value': value, 'op': op, 'bound': bound,
          'holds': bool(holds)}


def _train_variants(settings: TrainSettings):
  """(name, dtype, config overrides, kind, constrained) of each variant."""
  variants = [('sft_step', d, {}, 'step', True) for d in settings.dtypes]
  if settings.ablations:
    variants += [
        ('no_dropout', 'float32', {'dropout_rate': 0.}, 'step', True),
        ('unconstrained_loss', 'float32', {}, 'step', False),
        ('grad_no_optimizer', 'float32', {}, 'grad', True),
        ('forward_only', 'float32', {}, 'loss', True),
    ]
  return variants


def _train_fn(net, kind, constrained):
  """The jitted function of one variant (a step donates its state)."""
  if kind == 'step':
    return jax.jit(sft.make_sft_step(net, constrained=constrained),
                   donate_argnums=0)
  loss = functools.partial(sft.sft_loss, net=net, constrained=constrained)
  if kind == 'grad':
    return jax.jit(lambda params, batch, trie, key: jax.grad(
        loss, has_aux=True)(params, batch, trie, key))
  return jax.jit(lambda params, batch, trie, key: loss(
      params, batch, trie, key))


def run_train_suite(cfg: policy.PolicyConfig, trie: trie_lib.PrefixTrie,
                    examples: splits.Examples, *, settings: TrainSettings,
                    peak_flops: dict[str, float]) -> dict:
  """Times SFT steps (and ablations) on real training windows.

  Args:
    cfg: model config; `dtype` and `dropout_rate` are set per variant.
    trie: the catalogue trie on device.
    examples: training windows, history width T.
    settings: batch size, timed steps, dtypes, ablations, seed.
    peak_flops: measured matmul FLOP/s per dtype name in settings.dtypes
      (and 'float32').

  Returns:
    {'rows': one dict per variant, 'targets': [...]}.
  """
  iterator = pipeline.BatchIterator(
      examples, batch_size=settings.batch_size, seed=settings.seed,
      shuffle=True, drop_remainder=True)
  batches = [jax.device_put(next(iterator))
             for _ in range(settings.num_repeats + 1)]
  base_key = jax.random.key(settings.seed)
  tx = state_lib.make_optimizer(
      learning_rate=1e-3, total_steps=10_000, warmup_steps=100,
      weight_decay=0.01, grad_clip=1.0)
  rows = []
  for name, dtype, overrides, kind, constrained in _train_variants(settings):
    vcfg = dataclasses.replace(cfg, dtype=dtype, **overrides)
    net = policy.PolicyValueNet(vcfg)
    params = jax.jit(policy.init_params, static_argnums=0)(
        vcfg, jax.random.key(settings.seed))
    fn = _train_fn(net, kind, constrained)
    if kind == 'step':
      state = jax.jit(state_lib.TrainState.create, static_argnums=1)(
          params, tx)
      compiled, compile_s = timing.compile_timed(
          fn, state, batches[0], trie, base_key)
      holder = [state]

      def call(i, compiled=compiled, holder=holder):
        holder[0], metrics = compiled(holder[0], batches[i + 1], trie,
                                      base_key)   # donates the old state
        return holder[0], metrics
    else:
      compiled, compile_s = timing.compile_timed(
          fn, params, batches[0], trie, base_key)

      def call(i, compiled=compiled, params=params):
        return compiled(params, batches[i + 1], trie, base_key)
    xla_flops = timing.cost_flops(compiled)
    t = timing.time_calls(call, num_calls=settings.num_repeats,
                          compile_s=compile_s)
    breakdown = None
    if settings.profile and name == 'sft_step':
      breakdown = profile.time_by_category(compiled, lambda call=call: [
          jax.block_until_ready(call(i))
          for i in range(settings.num_repeats)])
    per_example = (flops.sft_forward_flops if kind == 'loss'
                   else flops.sft_train_flops)
    analytic = settings.batch_size * per_example(
        vcfg, num_history=examples.max_history, minimal=False)
    minimal = settings.batch_size * per_example(
        vcfg, num_history=examples.max_history, minimal=True)
    rows.append(dict(
        t.to_json(), variant=name, dtype=dtype,
        dropout_rate=vcfg.dropout_rate, kind=kind, constrained=constrained,
        examples_per_s=settings.batch_size / t.median_s,
        flops_per_step={'analytic_as_written': analytic,
                        'analytic_minimal': minimal,
                        'xla_cost_analysis': xla_flops},
        peak_flops_per_s=peak_flops[dtype],
        analytic_peak_fraction=analytic / t.median_s / peak_flops[dtype],
        xla_peak_fraction=xla_flops / t.median_s / peak_flops[dtype],
        time_by_category=breakdown))
  targets = [
      _target(f'{r["dtype"]} SFT step: analytic FLOP/s / matmul peak',
              r['analytic_peak_fraction'], '>=', MIN_TRAIN_PEAK_FRACTION)
      for r in rows if r['variant'] == 'sft_step']
  return {'rows': rows, 'targets': targets}


def _fused_runner(step, holder, frozen, consts, examples, iterator,
                  num_steps):
  """jitted N-step calls of `step` over the examples on device.

  `holder` is [state]; each call replaces the (donated) state in it.

  Returns:
    (compile_s, run(rows, valid) -> metrics that threads the state,
    next_chunk() -> (rows [N, B], valid [N, B]) on device).
  """
  fn = jax.jit(fused.scan_steps(step, num_steps), donate_argnums=0)

  def next_chunk():
    rows, valid = zip(*(iterator.next_rows() for _ in range(num_steps)))
    return jax.device_put((np.stack(rows), np.stack(valid)))

  compiled, compile_s = timing.compile_timed(
      fn, holder[0], frozen, examples, *next_chunk(), consts)

  def run(rows, valid):
    holder[0], metrics = compiled(holder[0], frozen, examples, rows, valid,
                                  consts)
    return metrics
  return compile_s, run, next_chunk


def _steps_per_call_rows(name, make, batch_size, settings):
  """One row per N: time per call and per step of `make()`'s step.

  The N values take turns (one call of each per round, after a warm-up
  round), so a shared machine's changing load hits them alike.
  """
  ns = settings.steps_per_call
  runners = {}
  for n in ns:
    step, state, frozen, consts, examples, iterator = make()
    compile_s, run, next_chunk = _fused_runner(
        step, [state], frozen, consts, examples, iterator, n)
    runners[n] = (compile_s, run, [next_chunk() for _ in range(
        settings.fused_repeats + 1)])
  times = {n: [] for n in ns}
  for i in range(-1, settings.fused_repeats):
    for n, (_, run, chunks) in runners.items():
      start = time.perf_counter()
      jax.block_until_ready(run(*chunks[i + 1]))
      if i >= 0:
        times[n].append(time.perf_counter() - start)
  rows = []
  for n in ns:
    t = timing.Timing(compile_s=runners[n][0], times_s=tuple(times[n]))
    rows.append(dict(t.to_json(), step=name, steps_per_call=n,
                     batch_size=batch_size, step_s=t.median_s / n,
                     examples_per_s=batch_size * n / t.median_s))
  for row in rows:
    row['speedup_vs_first'] = rows[0]['step_s'] / row['step_s']
  return rows


def _sft_maker(cfg, trie, examples, settings):
  net = policy.PolicyValueNet(cfg)
  tx = state_lib.make_optimizer(
      learning_rate=1e-3, total_steps=10_000, warmup_steps=100,
      weight_decay=0.01, grad_clip=1.0)
  sft_step = sft.make_sft_step(net)
  dev_examples = jax.device_put(dataclasses.asdict(examples))
  consts = {'trie': trie, 'key': jax.random.key(settings.seed)}

  def make():
    params = jax.jit(policy.init_params, static_argnums=0)(
        cfg, jax.random.key(settings.seed))
    state = jax.jit(state_lib.TrainState.create, static_argnums=1)(
        params, tx)
    iterator = pipeline.BatchIterator(
        examples, batch_size=settings.batch_size, seed=settings.seed,
        shuffle=True, drop_remainder=True)
    step = lambda state, _, batch, c: sft_step(state, batch, c['trie'],
                                               c['key'])
    return step, state, {}, consts, dev_examples, iterator
  return make


def _rl_maker(cfg, trie, examples, rl: RlSetup, kind, settings):
  net = policy.PolicyValueNet(cfg)
  rl_step = rl_step_lib.make_rl_step(net, rl.rollout_configs[kind],
                                     rl.rl_config)
  tx = state_lib.make_rl_optimizer(
      policy_lr=rl.learning_rate, value_lr=rl.value_learning_rate,
      total_steps=10_000, warmup_steps=10, value_warmup_steps=0,
      weight_decay=0.0, grad_clip=0.3,
      param_labels=rl_step_lib.value_param_label)
  num_items = trie.codes.shape[0]
  emb = np.random.default_rng(settings.seed).normal(
      size=(num_items, 32)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  dev_examples = jax.device_put(dataclasses.asdict(examples))
  consts = {'trie': trie, 'item_emb': jax.device_put(emb),
            'key': jax.random.key(settings.seed)}

  def make():
    params = jax.jit(policy.init_params, static_argnums=0)(
        cfg, jax.random.key(settings.seed))
    reference = jax.tree_util.tree_map(lambda x: x.copy(), params)
    state = jax.jit(state_lib.TrainState.create, static_argnums=1)(
        params, tx)
    iterator = pipeline.BatchIterator(
        examples, batch_size=settings.rl_batch_size, seed=settings.seed,
        shuffle=True, drop_remainder=True)
    step = lambda state, frozen, batch, c: rl_step(
        state, frozen['reference'], batch, c['trie'], c['item_emb'],
        c['key'])
    return step, state, {'reference': reference}, consts, dev_examples, (
        iterator)
  return make


def _epoch_end_to_end(make, steps_per_call, settings) -> dict:
  """One whole epoch through N-step calls, host index hand-over included
  (compilation excluded: a call of the same shapes is compiled first)."""
  step, state, frozen, consts, examples, iterator = make()
  batches = iterator.batches_per_epoch
  n = steps_per_call
  holder = [state]
  compile_s, run, next_chunk = _fused_runner(
      step, holder, frozen, consts, examples, iterator, n)
  single = None
  if batches % n:
    _, single, next_single = _fused_runner(
        step, holder, frozen, consts, examples, iterator, 1)
  iterator.restore({'epoch': 0, 'batch_in_epoch': 0})
  start = time.perf_counter()
  done, metrics = 0, None
  while done + n <= batches:
    metrics = run(*next_chunk())
    done += n
  while done < batches:      # the epoch's tail, one step per call
    metrics = single(*next_single())
    done += 1
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  return {'steps_per_call': n, 'steps': batches,
          'examples': batches * settings.batch_size, 'seconds': seconds,
          'examples_per_s': batches * settings.batch_size / seconds,
          'compile_s': compile_s}


def run_steps_per_call_suite(cfg: policy.PolicyConfig,
                             trie: trie_lib.PrefixTrie,
                             examples: splits.Examples, *,
                             settings: TrainSettings, rl: RlSetup) -> dict:
  """SFT and RL steps at N steps per jitted call (settings.steps_per_call).

  Every N gets a fresh state; each timed call runs N steps on its own
  chunk of batches (indices placed on device before timing). With
  settings.epoch, a whole SFT epoch runs end to end at the first N and at
  the N with the highest SFT examples/s.

  Returns:
    {'steps_per_call': rows (step, N, time per call and per step,
    examples/s), 'epoch': [...] or None}.
  """
  sft_make = _sft_maker(cfg, trie, examples, settings)
  rows = _steps_per_call_rows('sft', sft_make, settings.batch_size, settings)
  for kind in settings.rollouts:
    rows += _steps_per_call_rows(
        f'rl_{kind}', _rl_maker(cfg, trie, examples, rl, kind, settings),
        settings.rl_batch_size, settings)
  epoch = None
  if settings.epoch:
    sft_rows = [r for r in rows if r['step'] == 'sft']
    best = max(sft_rows, key=lambda r: r['examples_per_s'])['steps_per_call']
    epoch = [_epoch_end_to_end(sft_make, n, settings)
             for n in dict.fromkeys((sft_rows[0]['steps_per_call'], best))]
  return {'steps_per_call': rows, 'epoch': epoch}
