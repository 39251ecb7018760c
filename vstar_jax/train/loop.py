"""Host training loop: the stages of a run, then the final evaluation.

Each jitted call runs config.steps_per_call steps (train/fused.py: a
lax.scan over batches gathered on the device); metrics stay on device between
log steps (no host sync in the hot loop); logging, validation, checkpoints
and preemption are handled between calls. Checkpoints hold the TrainState
plus the data position, best-so-far and early-stopping counters, so a
resumed run replays the uninterrupted one exactly (per-step keys are
fold_in(base_key, step)).

`train_and_evaluate` checks the config against the devices and the data
before it writes anything, builds each stage (`sft_stage`, `rl_stage`) and
runs it with `run_stage`; evaluation helpers live in train/evaluation.py.
"""
import dataclasses
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from vstar_jax import checkpointing
from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax import experiment as experiment_lib
from vstar_jax import metrics_writer
from vstar_jax import parallel
from vstar_jax.data import files
from vstar_jax.data import pipeline
from vstar_jax.data import splits
from vstar_jax.eval import history_rule
from vstar_jax.eval import paired
from vstar_jax.eval import user_ranks
from vstar_jax.models import policy
from vstar_jax.rl import item_embeddings
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.train import evaluation
from vstar_jax.train import fused
from vstar_jax.train import preemption
from vstar_jax.train import recommender
from vstar_jax.train import state as state_lib


def run_keys(seed: int) -> dict[str, jax.Array]:
  """Named typed keys of a run, all derived from config.seed."""
  names = ('init', 'dropout', 'rollout')
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def jit_sft_step(train_step, mesh: jax.sharding.Mesh, state_sharding):
  """train_step(state, batch, trie, base_key) with explicit shardings.

  One step on a host batch (scale benchmark, parallel tests); the loop runs
  steps through train/fused.py.
  """
  repl = parallel.replicated(mesh)
  return jax.jit(
      train_step,
      # state, batch split over 'data', trie and key replicated.
      in_shardings=(state_sharding, parallel.batch_sharding(mesh), repl,
                    repl),
      out_shardings=(state_sharding, repl),   # state, scalar metrics
      donate_argnums=0)


def jit_rl_step(rl_step, mesh: jax.sharding.Mesh, state_sharding):
  """rl_step(state, ref_params, batch, trie, item_emb, base_key), sharded.

  One step on a host batch, like jit_sft_step.

  The reference parameters are sharded like the state's parameters.
  """
  repl = parallel.replicated(mesh)
  return jax.jit(
      rl_step,
      in_shardings=(state_sharding, state_sharding.params,
                    parallel.batch_sharding(mesh), repl, repl, repl),
      out_shardings=(state_sharding, repl),
      donate_argnums=0)


class _Throughput:
  """steps/s, examples/s and ETA between log points."""

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self.total = total_steps
    self.batch = batch_size
    self.last_step = start_step
    self.last_time = time.perf_counter()

  def __call__(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    return {'steps_per_s': rate, 'examples_per_s': rate * self.batch,
            'eta_s': (self.total - step) / max(rate, 1e-9)}


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
  """Per-step means of the calls' metrics (each entry [steps of the call])."""
  host = jax.device_get(pending)
  per_step = {k: np.concatenate([m[k] for m in host]) for k in host[0]}
  out = {k: float(np.mean(v)) for k, v in per_step.items()}
  for k, v in out.items():
    if not np.isfinite(v):
      raise FloatingPointError(f'non-finite {k}={v} in the last '
                               f'{len(per_step[k])} steps')
  return out


@dataclasses.dataclass(frozen=True)
class Run:
  """What the stages of one run share."""
  config: config_lib.RunConfig
  exp: experiment_lib.Experiment
  model: recommender.Recommender
  writer: metrics_writer.MetricWriter
  workdir: str
  mesh: jax.sharding.Mesh
  keys: dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage, ready to run.

  Attributes:
    name: 'sft' or 'rl' (checkpoint subdirectory and metric prefix).
    settings: config.sft or config.rl (batch_size, eval_every,
      early_stop_patience).
    state: initial TrainState (replaced by the latest checkpoint if any).
    state_sharding: the state's shardings (pytree of NamedSharding).
    frozen: pytree saved with the state and passed to `step` unchanged
      (e.g. the RL reference policy); sharded like `frozen_sharding`.
    frozen_sharding: its shardings.
    step: un-jitted step(state, frozen, batch, consts) -> (state, metrics
      dict of scalars); the loop jits N of them per call (train/fused.py).
    consts: replicated inputs of `step` (trie, base keys, ...).
    examples: the stage's training windows on the device
      (fused.device_examples); the iterator's rows index them.
    iterator: the stage's BatchIterator (its position is checkpointed).
    total_steps: optimizer steps of the stage.
  """
  name: str
  settings: config_lib.SftConfig | config_lib.RlSettings
  state: Any
  state_sharding: Any
  frozen: Any
  frozen_sharding: Any
  step: fused.Step
  consts: Any
  examples: dict[str, jax.Array]
  iterator: pipeline.BatchIterator
  total_steps: int


def stage_examples(config: config_lib.RunConfig, split, name: str):
  """The training windows stage `name` reads (fresh-prompt protocol)."""
  try:
    return splits.stage_examples(
        split, name, fresh_windows=config.data.fresh_windows,
        replay_sft_windows=config.rl.replay_sft_windows,
        sft_train_on=config.sft.train_on)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from None


def _stage_data(run: Run, name: str
                ) -> tuple[dict[str, jax.Array], pipeline.BatchIterator]:
  """The windows stage `name` reads, on the device, and their iterator.

  The iterator's rows index these windows (not split.train): both come from
  the same `stage_examples`, so under the fresh-prompt protocol SFT reads
  only SFT's windows and RL (and the CE control) only the fresh ones.
  """
  # check_data_fits has checked that one batch fits in the stage's windows.
  examples = stage_examples(run.config, run.exp.split, name)
  logging.info('%s reads %d of %d training windows', name, len(examples),
               len(run.exp.split.train))
  iterator = pipeline.BatchIterator(
      examples, batch_size=getattr(run.config, name).batch_size,
      seed=run.config.seed,
      shuffle=True, drop_remainder=True, process_index=jax.process_index(),
      process_count=jax.process_count())
  return fused.device_examples(examples, run.mesh), iterator


def _replicate(tree, mesh: jax.sharding.Mesh):
  return parallel.host_to_global(tree, parallel.replicated(mesh))


def _sharded_state(run: Run, make_state: Callable[[Any], Any], arg):
  """make_state(arg) born on its config.mesh shardings: (state, shardings)."""
  return parallel.create_sharded(
      make_state,
      lambda abstract: evaluation.param_shardings(run.config, run.mesh,
                                                  abstract),
      arg)


def sft_stage(run: Run) -> Stage:
  """SFT of a freshly initialised model, or of config.init_from's best SFT
  parameters with a fresh optimizer (the CE control of issue 12)."""
  c = run.config.sft
  examples, iterator = _stage_data(run, 'sft')
  total_steps = c.num_steps if c.num_steps > 0 else (
      c.num_epochs * iterator.batches_per_epoch)
  tx = state_lib.make_optimizer(
      learning_rate=c.learning_rate, total_steps=total_steps,
      warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
      grad_clip=c.grad_clip, end_lr_ratio=c.end_lr_ratio)
  model = run.model
  if run.config.init_from:
    params_of, start = (lambda p: p), evaluation.restore_params(
        run.config, model, run.config.init_from, 'sft', run.mesh)
  else:
    params_of, start = model.init, run.keys['init']
  state, state_sharding = _sharded_state(
      run, lambda x: state_lib.TrainState.create(params_of(x), tx), start)
  logging.info('%s model parameters: %d', model.kind,
               policy.num_params(state.params))
  consts = {'trie': run.exp.trie,
            'key': _replicate(run.keys['dropout'], run.mesh)}
  return Stage(
      name='sft', settings=c, state=state, state_sharding=state_sharding,
      frozen={}, frozen_sharding={},
      step=lambda state, _, batch, k: model.train_step(
          state, batch, k['trie'], k['key']),
      consts=consts,
      examples=examples,
      iterator=iterator, total_steps=total_steps)


def rl_stage(run: Run, init_params) -> Stage:
  """V-STAR RL from `init_params` (the frozen reference is a copy)."""
  cfg, c = run.config, run.config.rl
  examples, iterator = _stage_data(run, 'rl')
  total_steps = c.value_warmup_steps + (
      c.num_steps if c.num_steps > 0 else
      c.num_epochs * iterator.batches_per_epoch)
  # Each step (rollout) makes K optimizer updates: schedules count updates.
  k = c.updates_per_rollout
  tx = state_lib.make_rl_optimizer(
      policy_lr=c.learning_rate, value_lr=c.value_learning_rate,
      total_steps=k * total_steps, warmup_steps=k * c.warmup_steps,
      value_warmup_steps=k * c.value_warmup_steps,
      weight_decay=c.weight_decay, grad_clip=c.grad_clip,
      param_labels=rl_step_lib.value_param_label)
  # A copy: the state's buffers are donated every step.
  reference = jax.tree_util.tree_map(jnp.copy, init_params)
  state, state_sharding = _sharded_state(
      run, lambda params: state_lib.TrainState.create(params, tx),
      init_params)
  reference = jax.device_put(reference, state_sharding.params)
  rl_step = rl_step_lib.make_rl_step(
      run.model.net, config_lib.rollout_config(cfg, run.exp.num_levels),
      config_lib.rl_config(cfg))
  consts = {
      'trie': run.exp.trie,
      'item_emb': _replicate(item_embeddings.load_item_embeddings(
          c.item_embeddings, run.exp.dataset, cfg.embedding_cache_dir),
                             run.mesh),
      'key': _replicate(run.keys['rollout'], run.mesh)}
  return Stage(
      name='rl', settings=c, state=state, state_sharding=state_sharding,
      frozen={'reference': reference},
      frozen_sharding={'reference': state_sharding.params},
      step=lambda state, frozen, batch, k: rl_step(
          state, frozen['reference'], batch, k['trie'], k['item_emb'],
          k['key']),
      consts=consts,
      examples=examples,
      iterator=iterator, total_steps=total_steps)


class _Validation:
  """Validation on a fixed subset, best checkpoint and early stopping."""

  def __init__(self, run: Run, stage: Stage, ckpt, meta: dict[str, Any]):
    cfg = run.config
    self.run, self.name, self.ckpt, self.meta = run, stage.name, ckpt, meta
    self.patience = stage.settings.early_stop_patience
    self.rank_fn = evaluation.jit_rank_fn(
        run.model, cfg.eval.valid_beam, run.mesh, stage.state_sharding.params)
    self.subset = experiment_lib.fixed_subset(
        run.exp.split.valid, cfg.eval.valid_subset, cfg.seed)

  def __call__(self, step_num: int, params) -> None:
    cfg, meta = self.run.config, self.meta
    m, _ = evaluation.evaluate_split(
        self.rank_fn, params, self.run.exp, self.subset,
        batch_size=cfg.eval.batch_size, beam_width=cfg.eval.valid_beam,
        diversity=False, mesh=self.run.mesh)
    ndcg = m['ndcg@10']
    self.run.writer.write_scalars(
        step_num, {'ndcg@10': ndcg, 'hr@10': m['hr@10']},
        prefix=f'{self.name}/valid_subset/')
    # Ties keep the later parameters (e.g. a value warm-up leaves the
    # policy, hence NDCG, unchanged while the value head improves).
    improved = ndcg > meta['best']
    if ndcg >= meta['best']:
      meta.update(best=ndcg, best_step=step_num)
      self.ckpt.save_best(step_num, params, {'ndcg@10': ndcg})
    meta['bad_evals'] = 0 if improved else meta['bad_evals'] + 1
    if 0 < self.patience <= meta['bad_evals']:
      logging.info('%s: early stop at step %d (best %.4f at step %d)',
                   self.name, step_num, meta['best'], meta['best_step'])
      meta['stopped'] = True


class _StepCalls:
  """The stage's jitted calls of N = config.steps_per_call steps, and of 1.

  Calls of N start at multiples of N, so every cadence (a multiple of N,
  config.py checks) falls between calls; single steps fill the rest (the
  tail of an epoch-based stage, a resume from a step that N does not
  divide). Each call size is jitted (and traced) once, when first needed.
  """

  def __init__(self, run: Run, stage: Stage):
    self.n = run.config.steps_per_call
    self.run, self.stage, self.jitted = run, stage, {}

  def size(self, step_num: int, end: int) -> int:
    """Steps of the call that starts at `step_num` (the stage stops at end)."""
    fits = step_num % self.n == 0 and step_num + self.n <= end
    return self.n if fits else 1

  def __call__(self, n: int) -> Callable[..., Any]:
    if n not in self.jitted:
      stage = self.stage
      self.jitted[n] = fused.jit_steps(
          stage.step, n, self.run.mesh, stage.state_sharding,
          stage.frozen_sharding)
    return self.jitted[n]


def run_stage(run: Run, stage: Stage) -> tuple[Any, dict[str, Any]]:
  """The host loop shared by every training stage.

  Returns:
    (best params, summary dict), or (None, {..., 'interrupted': True}) when
    the run stops before the end on purpose (config.stop_after_steps) or on
    a preemption notice (SIGTERM; then also 'preempted': True), after a
    checkpoint of the current step.
  """
  cfg, name, iterator = run.config, stage.name, stage.iterator
  total_steps, writer = stage.total_steps, run.writer
  ckpt = checkpointing.Checkpointer(
      os.path.join(run.workdir, 'checkpoints', name), keep=cfg.checkpoint.keep)
  state, frozen = stage.state, stage.frozen
  meta = {'data': iterator.state(), 'best': -1.0, 'best_step': -1,
          'bad_evals': 0, 'stopped': False, 'train_time_s': 0.0}
  restored = ckpt.restore_latest({'state': state, 'frozen': frozen})
  if restored is not None:
    tree, meta = restored
    state, frozen = tree['state'], tree['frozen']
    iterator.restore(meta['data'])
  earlier_processes_s = meta['train_time_s']   # 0 unless resumed
  ckpt.drop_best_except(meta['best_step'])
  start_step = int(jax.device_get(state.step))
  validate = _Validation(run, stage, ckpt, meta)
  starts_trained = name == 'rl' or bool(cfg.init_from)
  if cfg.eval.validate_start and starts_trained and restored is None:
    validate(0, state.params)     # the start competes for "best"

  def save(step_num):
    meta['data'] = iterator.state()
    if ckpt.latest.latest_step() != step_num:
      ckpt.save(step_num, {'state': state, 'frozen': frozen}, meta)

  throughput = _Throughput(start_step, total_steps, stage.settings.batch_size)
  pending = []
  step_num = start_step
  t_start = time.perf_counter() - meta['train_time_s']
  stop_at = (start_step + cfg.stop_after_steps
             if cfg.stop_after_steps > 0 else total_steps)
  end = min(total_steps, stop_at)
  calls = _StepCalls(run, stage)
  preempted = False
  while step_num < end and not meta['stopped']:
    n = calls.size(step_num, end)
    rows, valid = fused.next_rows(iterator, n, run.mesh)
    with jax.transfer_guard('disallow'):   # the hot loop: no implicit copies
      state, metrics = calls(n)(state, frozen, stage.examples, rows, valid,
                                stage.consts)
    pending.append(metrics)
    step_num += n
    if step_num % cfg.log_every == 0 or step_num == total_steps:
      scalars = _mean_metrics(pending)
      scalars.update(throughput(step_num))
      scalars['epoch'] = step_num / iterator.batches_per_epoch
      writer.write_scalars(step_num, scalars, prefix=f'{name}/')
      pending = []
    if (step_num % stage.settings.eval_every == 0 or
        step_num == total_steps):
      validate(step_num, state.params)
    if (step_num % cfg.checkpoint.every_steps == 0 and
        step_num < total_steps):
      meta['train_time_s'] = time.perf_counter() - t_start
      save(step_num)
    if preemption.reached(step_num) and step_num < total_steps:
      preempted = True
      break
  if preempted and pending:    # a partial log window: written, not lost
    writer.write_scalars(step_num, _mean_metrics(pending), prefix=f'{name}/')
  meta['train_time_s'] = time.perf_counter() - t_start
  save(step_num)
  writer.flush()
  if preempted:
    logging.warning('%s: preemption notice (SIGTERM): checkpoint saved at '
                    'step %d; rerun the same command to resume.', name,
                    step_num)
    ckpt.close()
    return None, {'steps': step_num, 'interrupted': True, 'preempted': True}
  if step_num < total_steps and not meta['stopped']:
    logging.info('Stopped after %d steps (config.stop_after_steps); rerun '
                 'the same command to resume.', step_num - start_step)
    ckpt.close()
    return None, {'steps': step_num, 'interrupted': True}
  best_params, _ = ckpt.restore_best(state.params)
  ckpt.close()
  if meta['best_step'] == 0:
    logging.info('%s: no step beat the starting parameters on validation; '
                 'the stage reports its start', name)
  return best_params, {
      'steps': step_num, 'steps_per_epoch': iterator.batches_per_epoch,
      'best_step': meta['best_step'],
      'best_valid_subset_ndcg@10': meta['best'],
      'early_stopped': meta['stopped'], 'train_time_s': meta['train_time_s'],
      'resumed_train_time_s': earlier_processes_s,
      'num_params': policy.num_params(best_params)}


def check_data_fits(config: config_lib.RunConfig,
                    exp: experiment_lib.Experiment) -> None:
  """Config checks that need the data: batch sizes, SID depth."""
  for stage in config.stage_list:
    num_train = len(stage_examples(config, exp.split, stage))
    batch_size = getattr(config, stage).batch_size
    if pipeline.num_batches(num_train, batch_size=batch_size,
                            drop_remainder=True) == 0:
      raise errors.ConfigError(
          f'config.{stage}.batch_size={batch_size} exceeds the {num_train} '
          'training examples')
  if exp.trie is not None:
    config_lib.check_levels(config, exp.num_levels)


def _run_info(config: config_lib.RunConfig, exp, model, mesh
              ) -> dict[str, Any]:
  """The parts of results.json known before training."""
  return {
      'config': config.to_dict(), 'git_commit': evaluation.git_commit(),
      'dataset': {'name': exp.dataset.name, 'users': exp.dataset.num_users,
                  'items': exp.dataset.num_items,
                  'train_examples': len(exp.split.train),
                  'protocol': exp.split.protocol,
                  'sid_source': exp.sid_source,
                  'num_levels': exp.num_levels},
      'eval': {'beam_width': config.eval.beam_width,
               'exclude_history': config.eval.exclude_history,
               'ranking': model.ranking},
      'mesh': {'shape': dict(mesh.shape), 'fsdp': config.mesh.fsdp,
               'processes': jax.process_count()},
      'stages': {}, 'metrics': {}, 'timings': {}}


# ModelConfig fields that shape the parameters a checkpoint holds.
_PARAM_SHAPE_FIELDS = ('kind', 'width', 'num_layers', 'num_heads', 'mlp_ratio',
                       'item_id_embedding')


def check_same_model(config: config_lib.RunConfig, init_from: str) -> None:
  """A run that starts from `init_from` must build the same network.

  Raises:
    ConfigError: init_from has no config.json, or a parameter-shaping
      config.model field differs (e.g. RL at the cpu size from a tiger SFT).
  """
  saved = evaluation.saved_config_json(
      init_from, f'config.init_from={init_from!r}').get('model', {})
  for name in _PARAM_SHAPE_FIELDS:
    ours = getattr(config.model, name)
    theirs = saved.get(name, ours)   # runs saved before a field existed
    if theirs != ours:
      raise errors.ConfigError(
          f'config.model.{name}={ours!r}, but config.init_from={init_from!r} '
          f'was trained with {theirs!r}: use its model size (e.g. '
          '--config=launch/configs/ablation.py:scientific:tiger,...)')


def prepare_run(config: config_lib.RunConfig, workdir: str) -> Run:
  """Checks everything that can be checked, then creates the work directory.

  Devices, data and model are checked first, so a bad flag or input file
  leaves nothing behind (SIDs built by our tokenizer are cached in
  WORKDIR/sids/ once the data has been read).
  """
  mesh = parallel.make_mesh(data=config.mesh.data, model=config.mesh.model)
  config_lib.check_batch_sizes(config, mesh)
  if config.init_from:
    check_same_model(config, config.init_from)
  exp = experiment_lib.load_experiment(config, workdir)
  check_data_fits(config, exp)
  model = recommender.from_config(config, exp)
  if exp.trie is not None:    # every jitted function takes it replicated
    exp = dataclasses.replace(exp, trie=_replicate(exp.trie, mesh))
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:      # launch.evaluate/recommend rebuild from it
    files.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  writer = metrics_writer.MetricWriter(workdir, enabled=is_main)
  return Run(config=config, exp=exp, model=model, writer=writer,
             workdir=workdir, mesh=mesh, keys=run_keys(config.seed))


def train_and_evaluate(config: config_lib.RunConfig, workdir: str
                       ) -> dict[str, Any]:
  """Runs the configured stages, evaluates, writes WORKDIR/results.json."""
  start = time.perf_counter()
  run = prepare_run(config, workdir)
  results = _run_info(config, run.exp, run.model, run.mesh)
  params, stage_ranks = None, {}
  for name in config.stage_list:
    if name == 'sft':
      stage = sft_stage(run)
    else:
      if params is None:
        params = evaluation.restore_params(config, run.model,
                                           config.init_from, 'sft', run.mesh)
      stage = rl_stage(run, params)
    params, results['stages'][name] = run_stage(run, stage)
    if params is None:            # stopped early on purpose: resume later
      run.writer.close()
      return results
    (results['metrics'][name], results['timings'][f'{name}_eval_s'],
     stage_ranks[name]) = evaluation.final_evaluation(
         config, run.exp, run.model, params, run.mesh)
    if jax.process_index() == 0:   # per-user ranks beside results.json
      user_ranks.write(os.path.join(workdir, 'results.json'), name,
                       stage_ranks[name])
  # A resumed run's wall time includes its earlier processes' training (to
  # their last checkpoint), so tables time the whole run, not its last leg.
  results['timings']['wall_s'] = time.perf_counter() - start + sum(
      stage.get('resumed_train_time_s', 0.0)
      for stage in results['stages'].values())
  results['device'] = str(jax.devices()[0].device_kind)
  run.writer.close()
  if jax.process_index() == 0:
    # Each later stage (RL) against the first (SFT), paired over users.
    deltas = paired.stage_deltas(stage_ranks)
    results['paired_vs_first_stage'] = {
        stage: {split: [d.to_dict() for d in ds]
                for split, ds in by_split.items()}
        for stage, by_split in deltas.items()}
    files.write_json(os.path.join(workdir, 'results.json'), results)
    table = evaluation.results_table(results)
    if deltas:
      table += '\n\n' + paired.stage_deltas_markdown(
          deltas, config.stage_list[0])
    for name, stage in results['stages'].items():
      if stage.get('best_step') == 0:
        table += (f'\n{name}: no step beat its start on validation; the '
                  'stage reports its starting parameters.')
    print(f'\nResults ({run.exp.dataset.name}, {run.exp.split.protocol}, '
          f'full ranking, beam {config.eval.beam_width}; '
          f'{history_rule.describe(config.eval.exclude_history)}):\n'
          f'{table}', flush=True)
  return results
