"""Host training loop: SFT with validation-driven checkpoints, then evaluation.

One jitted step per stage; metrics stay on device between log steps (no host
sync in the hot loop); checkpoints hold the TrainState plus the data position,
best-so-far and early-stopping counters, so a resumed run replays the
uninterrupted one exactly (per-step keys are fold_in(base_key, step)).
"""
import dataclasses
import os
import subprocess
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vstar_jax import checkpointing
from vstar_jax import experiment as experiment_lib
from vstar_jax import metrics_writer
from vstar_jax import parallel
from vstar_jax.data import files
from vstar_jax.data import pipeline
from vstar_jax.decoding import beam as beam_lib
from vstar_jax.decoding.ved import search
from vstar_jax.eval import evaluate as evaluate_lib
from vstar_jax.models import policy
from vstar_jax.rl import item_embeddings
from vstar_jax.rl import rewards as rewards_lib
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.train import preemption
from vstar_jax.train import recommender
from vstar_jax.train import state as state_lib

REPORT_CUTOFFS = (1, 3, 5, 10, 20)


def run_keys(seed: int) -> dict[str, jax.Array]:
  """Named typed keys of a run, all derived from config.seed."""
  names = ('init', 'dropout', 'rollout')
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def git_commit() -> str:
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root,
                         capture_output=True, text=True, check=True)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           cwd=root, capture_output=True, text=True,
                           check=True).stdout.strip()
    return out.stdout.strip() + ('-dirty' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def evaluate_split(rank_fn, params, exp: experiment_lib.Experiment,
                   examples, *, batch_size: int, beam_width: int,
                   diversity: bool = True,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """Metrics of one split; with a mesh, users are split over 'data'."""
  return evaluate_lib.evaluate(
      rank_fn, params, exp.trie, examples.history, examples.history_mask,
      examples.target, batch_size=batch_size, list_len=beam_width,
      item_codes=exp.codes,
      long_tail_mask=exp.long_tail if diversity else None,
      cutoffs=REPORT_CUTOFFS,
      input_sharding=None if mesh is None else parallel.batch_sharding(mesh))


def jit_rank_fn(model, list_len: int, mesh: jax.sharding.Mesh | None,
                params_sharding=None):
  """rank(params, trie, history, history_mask) jitted for the mesh.

  Users are split over 'data' and the [B, K] lists come back replicated, so
  every process can read them. Without a mesh: a plain jit (launch.evaluate).
  """
  rank = model.make_rank_fn(list_len)
  if mesh is None:
    return jax.jit(rank)
  batch, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  return jax.jit(rank, in_shardings=(params_sharding, repl, batch, batch),
                 out_shardings=repl)


def jit_sft_step(train_step, mesh: jax.sharding.Mesh, state_sharding):
  """train_step(state, batch, trie, base_key) with explicit shardings."""
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
  host = jax.device_get(pending)
  out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
  for k, v in out.items():
    if not np.isfinite(v):
      raise FloatingPointError(f'non-finite {k}={v} in the last '
                               f'{len(host)} steps')
  return out


def _stage_iterator(config, exp, batch_size: int, name: str):
  iterator = pipeline.BatchIterator(
      exp.split.train, batch_size=batch_size, seed=config.seed,
      shuffle=True, drop_remainder=True, process_index=jax.process_index(),
      process_count=jax.process_count())
  if iterator.batches_per_epoch == 0:
    raise experiment_lib.ConfigError(
        f'config.{name}.batch_size={batch_size} exceeds the '
        f'{len(exp.split.train)} training examples')
  return iterator


def _run_stage(name: str, config, exp, model, writer, workdir: str, *,
               mesh, state, state_sharding, frozen, step, iterator,
               total_steps: int, eval_every: int, patience: int,
               batch_size: int):
  """The host loop shared by every training stage.

  Args:
    name: stage name (checkpoint subdirectory and metric prefix).
    config, exp, model, writer, workdir: the run.
    mesh: the device mesh (batches are split over its 'data' axis).
    state: initial TrainState (replaced by the latest checkpoint if any).
    state_sharding: the state's shardings (pytree of NamedSharding).
    frozen: pytree saved with the state and passed to `step` unchanged
      (e.g. the RL reference policy).
    step: jitted step(state, frozen, batch) -> (state, metrics dict).
    iterator: the stage's BatchIterator (its position is checkpointed).
    total_steps: optimizer steps of the stage.
    eval_every: validation cadence (steps); the best is checkpointed.
    patience: early stop after this many evaluations without improvement
      (0: never).
    batch_size: for throughput logs.

  Returns:
    (best params or None if stopped early on purpose, summary dict). A
    preemption notice (SIGTERM) checkpoints the current step and returns
    (None, {..., 'preempted': True}).
  """
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints', name), keep=config.checkpoint.keep)
  meta = {'data': iterator.state(), 'best': -1.0, 'best_step': -1,
          'bad_evals': 0, 'stopped': False, 'train_time_s': 0.0}
  restored = ckpt.restore_latest({'state': state, 'frozen': frozen})
  if restored is not None:
    tree, meta = restored
    state, frozen = tree['state'], tree['frozen']
    iterator.restore(meta['data'])
  start_step = int(jax.device_get(state.step))
  rank_fn = jit_rank_fn(model, config.eval.valid_beam, mesh,
                        state_sharding.params)
  valid_subset = experiment_lib.fixed_subset(
      exp.split.valid, config.eval.valid_subset, config.seed)

  def save(step_num):
    meta['data'] = iterator.state()
    if ckpt.latest.latest_step() != step_num:
      ckpt.save(step_num, {'state': state, 'frozen': frozen}, meta)

  throughput = _Throughput(start_step, total_steps, batch_size)
  pending = []
  step_num = start_step
  t_start = time.perf_counter() - meta['train_time_s']
  stop_at = (start_step + config.stop_after_steps
             if config.stop_after_steps > 0 else total_steps)
  preempted = False
  while step_num < min(total_steps, stop_at) and not meta['stopped']:
    batch = parallel.global_batch(next(iterator), mesh)
    with jax.transfer_guard('disallow'):   # the hot loop: no implicit copies
      state, metrics = step(state, frozen, batch)
    pending.append(metrics)
    step_num += 1
    if step_num % config.log_every == 0 or step_num == total_steps:
      scalars = _mean_metrics(pending)
      scalars.update(throughput(step_num))
      scalars['epoch'] = step_num / iterator.batches_per_epoch
      writer.write_scalars(step_num, scalars, prefix=f'{name}/')
      pending = []
    if step_num % eval_every == 0 or step_num == total_steps:
      m = evaluate_split(rank_fn, state.params, exp, valid_subset,
                         batch_size=config.eval.batch_size,
                         beam_width=config.eval.valid_beam, diversity=False,
                         mesh=mesh)
      ndcg = m['ndcg@10']
      writer.write_scalars(step_num, {'ndcg@10': ndcg, 'hr@10': m['hr@10']},
                           prefix=f'{name}/valid_subset/')
      # Ties keep the later parameters (e.g. a value warm-up leaves the
      # policy, hence NDCG, unchanged while the value head improves).
      improved = ndcg > meta['best']
      if ndcg >= meta['best']:
        meta.update(best=ndcg, best_step=step_num)
        ckpt.save_best(step_num, state.params, {'ndcg@10': ndcg})
      meta['bad_evals'] = 0 if improved else meta['bad_evals'] + 1
      if 0 < patience <= meta['bad_evals']:
        logging.info('%s: early stop at step %d (best %.4f at step %d)',
                     name, step_num, meta['best'], meta['best_step'])
        meta['stopped'] = True
    if (step_num % config.checkpoint.every_steps == 0 and
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
  summary = {'steps': step_num,
             'steps_per_epoch': iterator.batches_per_epoch,
             'best_step': meta['best_step'],
             'best_valid_subset_ndcg@10': meta['best'],
             'early_stopped': meta['stopped'],
             'train_time_s': meta['train_time_s'],
             'num_params': policy.num_params(best_params)}
  return best_params, summary


def run_sft(config: ml_collections.ConfigDict, exp, model, keys, writer,
            workdir: str, mesh: jax.sharding.Mesh
            ) -> tuple[Any, dict[str, Any]]:
  """Trains the model by SFT; returns (best params, stage summary)."""
  c = config.sft
  iterator = _stage_iterator(config, exp, c.batch_size, 'sft')
  total_steps = c.num_steps if c.num_steps > 0 else (
      c.num_epochs * iterator.batches_per_epoch)
  tx = state_lib.make_optimizer(
      learning_rate=c.learning_rate, total_steps=total_steps,
      warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
      grad_clip=c.grad_clip)
  # Parameters and optimizer state are born on their shardings.
  state, state_sharding = parallel.create_sharded(
      lambda key: state_lib.TrainState.create(model.init(key), tx),
      lambda abstract: parallel.state_shardings(config, mesh, abstract),
      keys['init'])
  logging.info('%s model parameters: %d', model.kind,
               policy.num_params(state.params))
  step_fn = jit_sft_step(model.train_step, mesh, state_sharding)
  trie, dropout_key = exp.trie, _replicate(keys['dropout'], mesh)
  return _run_stage(
      'sft', config, exp, model, writer, workdir, mesh=mesh,
      state=state, state_sharding=state_sharding, frozen={},
      step=lambda state, _, batch: step_fn(state, batch, trie, dropout_key),
      iterator=iterator, total_steps=total_steps, eval_every=c.eval_every,
      patience=c.early_stop_patience, batch_size=c.batch_size)


def _replicate(tree, mesh: jax.sharding.Mesh):
  return parallel.host_to_global(tree, parallel.replicated(mesh))


def rollout_config(config, num_levels: int) -> rollout_lib.RolloutConfig:
  r = config.rollout
  budget = r.ved_budget if r.ved_budget > 0 else round(
      r.ved_kappa * beam_lib.decode_cost(num_levels, r.ved_init_beam))
  cfg = rollout_lib.RolloutConfig(
      kind=r.kind, num_candidates=r.num_candidates, beam_width=r.beam_width,
      temperature=r.temperature,
      ved=search.VedConfig(
          budget=budget, init_beam=r.ved_init_beam,
          num_candidates=r.num_candidates, lam=r.ved_lambda,
          beta=r.ved_beta, temperature=r.temperature,
          evaluate_leaves=r.ved_evaluate_leaves, rank=r.ved_rank,
          rank_weight=r.ved_rank_weight, selection=r.ved_selection,
          normalize_depth=r.ved_normalize_depth,
          nodes_per_iter=r.ved_nodes_per_iter))
  try:
    cfg.validate(num_levels)
  except ValueError as e:
    raise experiment_lib.ConfigError(f'config.rollout: {e}') from None
  return cfg


def rl_objective_config(config, num_levels: int) -> rl_step_lib.RLConfig:
  c = config.rl
  weights = tuple(c.step_weights)
  if len(weights) != num_levels:
    raise experiment_lib.ConfigError(
        f'config.rl.step_weights={weights} needs one weight per SID level '
        f'(L={num_levels})')
  if c.reward not in rewards_lib.REWARD_KINDS:
    raise experiment_lib.ConfigError(
        f'config.rl.reward={c.reward!r}: expected one of '
        f'{rewards_lib.REWARD_KINDS}')
  return rl_step_lib.RLConfig(
      reward=c.reward, grpo_weight=c.grpo_weight,
      sibling_alpha=c.sibling_alpha, clip_eps=c.clip_eps, kl_beta=c.kl_beta,
      value_coef=c.value_coef, gamma=c.gamma, step_weights=weights,
      value_warmup_steps=c.value_warmup_steps)


def run_rl(config: ml_collections.ConfigDict, exp, model, keys, writer,
           workdir: str, mesh: jax.sharding.Mesh, init_params
           ) -> tuple[Any, dict[str, Any]]:
  """V-STAR RL from `init_params` (the frozen reference is a copy)."""
  if model.net is None:
    raise experiment_lib.ConfigError(
        f'config.model.kind={model.kind!r} has no SID policy for RL')
  c = config.rl
  iterator = _stage_iterator(config, exp, c.batch_size, 'rl')
  total_steps = c.value_warmup_steps + (
      c.num_steps if c.num_steps > 0 else
      c.num_epochs * iterator.batches_per_epoch)
  tx = state_lib.make_rl_optimizer(
      policy_lr=c.learning_rate, value_lr=c.value_learning_rate,
      total_steps=total_steps, warmup_steps=c.warmup_steps,
      value_warmup_steps=c.value_warmup_steps, weight_decay=c.weight_decay,
      grad_clip=c.grad_clip, param_labels=rl_step_lib.value_param_label)
  num_levels = exp.num_levels
  # A copy: the state's buffers are donated every step.
  reference = jax.tree_util.tree_map(jnp.copy, init_params)
  state, state_sharding = parallel.create_sharded(
      lambda params: state_lib.TrainState.create(params, tx),
      lambda abstract: parallel.state_shardings(config, mesh, abstract),
      init_params)
  reference = jax.device_put(reference, state_sharding.params)
  step_fn = jit_rl_step(rl_step_lib.make_rl_step(
      model.net, rollout_config(config, num_levels),
      rl_objective_config(config, num_levels)), mesh, state_sharding)
  item_emb = _replicate(item_embeddings.load_item_embeddings(
      c.item_embeddings, exp.dataset, config.embedding_cache_dir), mesh)
  trie, rollout_key = exp.trie, _replicate(keys['rollout'], mesh)
  return _run_stage(
      'rl', config, exp, model, writer, workdir, mesh=mesh,
      state=state, state_sharding=state_sharding,
      frozen={'reference': reference},
      step=lambda state, frozen, batch: step_fn(
          state, frozen['reference'], batch, trie, item_emb, rollout_key),
      iterator=iterator, total_steps=total_steps, eval_every=c.eval_every,
      patience=c.early_stop_patience, batch_size=c.batch_size)


def final_evaluation(config, exp, model, params,
                     mesh: jax.sharding.Mesh | None = None):
  """Full valid and test evaluation at the reporting beam width.

  With a mesh, `params` must be global arrays on it and exp.trie replicated
  on it (train_and_evaluate); without, everything sits on one device.

  Returns:
    (metrics {split: {name: value}}, seconds {split: wall time}).
  """
  beam_width = config.eval.beam_width
  rank_fn = jit_rank_fn(
      model, beam_width, mesh, None if mesh is None else
      jax.tree_util.tree_map(lambda x: x.sharding, params))
  metrics, seconds = {}, {}
  for name in ('valid', 'test'):
    examples = getattr(exp.split, name)
    start = time.perf_counter()
    metrics[name] = evaluate_split(rank_fn, params, exp, examples,
                                   batch_size=config.eval.batch_size,
                                   beam_width=beam_width, mesh=mesh)
    seconds[name] = time.perf_counter() - start
  return metrics, seconds


def results_table(results: dict[str, Any]) -> str:
  """Markdown table of the final metrics (rows: stage x split)."""
  keys = [f'{m}@{k}' for m in ('hr', 'ndcg') for k in REPORT_CUTOFFS]
  keys += ['coverage@10', 'long_tail_share@10', 'distinct_l1@10',
           'distinct_l2@10']
  header = '| stage | split | ' + ' | '.join(keys) + ' |'
  lines = [header, '|' + '---|' * (len(keys) + 2)]
  for stage, by_split in results['metrics'].items():
    for split_name, m in by_split.items():
      cells = [f'{m[k]:.4f}' if k in m else '' for k in keys]
      lines.append(f'| {stage} | {split_name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> dict[str, Any]:
  """Runs the configured stages, evaluates, writes WORKDIR/results.json."""
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh(config)
  stages = tuple(s.strip() for s in config.stages.split(',') if s.strip())
  for stage in ('sft', 'rl'):
    if stage in stages:
      parallel.check_batch_size(mesh, config[stage].batch_size,
                                f'{stage}.batch_size')
  parallel.check_batch_size(mesh, config.eval.batch_size, 'eval.batch_size')
  exp = experiment_lib.load_experiment(config, workdir)
  if exp.trie is not None:    # every jitted function takes it replicated
    exp = dataclasses.replace(exp, trie=_replicate(exp.trie, mesh))
  if jax.process_index() == 0:      # launch.evaluate/recommend rebuild from it
    files.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  model = recommender.from_config(config, exp)
  keys = run_keys(config.seed)
  is_main = jax.process_index() == 0
  writer = metrics_writer.MetricWriter(workdir, enabled=is_main)
  unknown = set(stages) - {'sft', 'rl'}
  if unknown or not stages:
    raise experiment_lib.ConfigError(
        f'config.stages={stages}: expected a sequence of \'sft\' and/or '
        '\'rl\'')
  results: dict[str, Any] = {
      'config': config.to_dict(), 'git_commit': git_commit(),
      'dataset': {'name': exp.dataset.name, 'users': exp.dataset.num_users,
                  'items': exp.dataset.num_items,
                  'train_examples': len(exp.split.train),
                  'protocol': exp.split.protocol,
                  'sid_source': exp.sid_source,
                  'num_levels': exp.num_levels},
      'eval': {'beam_width': config.eval.beam_width,
               'ranking': model.ranking},
      'mesh': {'shape': dict(mesh.shape),
               'fsdp': parallel.mesh_config(config).fsdp,
               'processes': jax.process_count()},
      'stages': {}, 'metrics': {}, 'timings': {}}
  params = None
  if 'sft' in stages:
    params, summary = run_sft(config, exp, model, keys, writer, workdir,
                              mesh)
    results['stages']['sft'] = summary
    if params is None:            # stopped early on purpose: resume later
      writer.close()
      return results
    results['metrics']['sft'], results['timings']['sft_eval_s'] = (
        final_evaluation(config, exp, model, params, mesh))
  if 'rl' in stages:
    if params is None:
      if not config.init_from:
        raise experiment_lib.ConfigError(
            'config.stages has rl without sft: set config.init_from to a '
            'run directory with an SFT checkpoint')
      params = restore_params(config, model, config.init_from, 'sft', mesh)
    params, summary = run_rl(config, exp, model, keys, writer, workdir,
                             mesh, params)
    results['stages']['rl'] = summary
    if params is None:
      writer.close()
      return results
    results['metrics']['rl'], results['timings']['rl_eval_s'] = (
        final_evaluation(config, exp, model, params, mesh))
  results['timings']['wall_s'] = time.perf_counter() - start
  results['device'] = str(jax.devices()[0].device_kind)
  writer.close()
  if is_main:
    files.write_json(os.path.join(workdir, 'results.json'), results)
    table = results_table(results)
    print(f'\nResults ({exp.dataset.name}, {exp.split.protocol}, full '
          f'ranking, beam {config.eval.beam_width}):\n{table}', flush=True)
  return results


def restore_params(config: ml_collections.ConfigDict, model, workdir: str,
                   stage: str, mesh: jax.sharding.Mesh | None = None):
  """Best-on-validation parameters of a finished stage of a run.

  With a mesh they come back on their config.mesh shardings; without, on
  the first local device (whatever mesh or process count saved them).
  """
  like = jax.eval_shape(model.init, jax.random.key(0))
  if mesh is None:
    shardings = jax.tree_util.tree_map(
        lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
        like)
  else:
    shardings = parallel.state_shardings(config, mesh, like)
  like = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like,
      shardings)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints', stage, 'best')):
    raise experiment_lib.ConfigError(
        f'{workdir}: no best checkpoint for stage {stage!r}')
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints', stage),
      keep=config.checkpoint.keep)
  restored = ckpt.restore_best(like)
  ckpt.close()
  if restored is None:
    raise experiment_lib.ConfigError(
        f'{workdir}: no best checkpoint for stage {stage!r}')
  return restored[0]


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was started with (WORKDIR/config.json)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise experiment_lib.ConfigError(
        f'{path}: not found; is {workdir} a launch.train work directory?')
  return ml_collections.ConfigDict(files.read_json(path))
