"""Evaluating a run: ranking jits, split metrics, restoring the best
parameters of a finished stage, the results table and a run's saved config.

Used by the training loop (validation and the final evaluation) and by the
binaries that work from a finished run's directory (launch.evaluate,
launch.recommend, launch.benchmark).
"""
import os
import subprocess
import time
from typing import Any

import jax
import numpy as np
import ml_collections

from vstar_jax import checkpointing
from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax import experiment as experiment_lib
from vstar_jax import parallel
from vstar_jax.data import files
from vstar_jax.eval import evaluate as evaluate_lib
from vstar_jax.eval import user_ranks

REPORT_CUTOFFS = (1, 3, 5, 10, 20)


def git_commit() -> str:
  """HEAD of this repository, '-dirty' if tracked files changed."""
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
                   mesh: jax.sharding.Mesh | None = None
                   ) -> tuple[dict[str, float], np.ndarray]:
  """(metrics, [M] target ranks) of one split; with a mesh, users are
  split over 'data'."""
  return evaluate_lib.evaluate_ranks(
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


def final_evaluation(config: config_lib.RunConfig, exp, model, params,
                     mesh: jax.sharding.Mesh | None = None):
  """Full valid and test evaluation at the reporting beam width.

  With a mesh, `params` must be global arrays on it and exp.trie replicated
  on it (train_and_evaluate); without, everything sits on one device.

  Returns:
    (metrics {split: {name: value}}, seconds {split: wall time},
    per-user ranks {split: user_ranks.UserRanks}).
  """
  beam_width = config.eval.beam_width
  rank_fn = jit_rank_fn(
      model, beam_width, mesh, None if mesh is None else
      jax.tree_util.tree_map(lambda x: x.sharding, params))
  metrics, seconds, ranks = {}, {}, {}
  for name in ('valid', 'test'):
    examples = getattr(exp.split, name)
    start = time.perf_counter()
    metrics[name], rank = evaluate_split(rank_fn, params, exp, examples,
                                         batch_size=config.eval.batch_size,
                                         beam_width=beam_width, mesh=mesh)
    ranks[name] = user_ranks.UserRanks(examples.user, examples.target, rank,
                                       beam_width)
    seconds[name] = time.perf_counter() - start
  return metrics, seconds, ranks


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


def param_shardings(config: config_lib.RunConfig, mesh: jax.sharding.Mesh,
                    abstract_tree: Any) -> Any:
  """Shardings of parameters (and their optimizer state) per config.mesh."""
  return parallel.tree_shardings(mesh, abstract_tree, fsdp=config.mesh.fsdp,
                                 fsdp_min_size=config.mesh.fsdp_min_size)


def restore_params(config: config_lib.RunConfig, model, workdir: str,
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
    shardings = param_shardings(config, mesh, like)
  like = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like,
      shardings)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints', stage, 'best')):
    raise errors.ConfigError(
        f'{workdir}: no best checkpoint for stage {stage!r}')
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints', stage),
      keep=config.checkpoint.keep)
  restored = ckpt.restore_best(like)
  ckpt.close()
  if restored is None:
    raise errors.ConfigError(
        f'{workdir}: no best checkpoint for stage {stage!r}')
  return restored[0]


def load_run_config(workdir: str, defaults: ml_collections.ConfigDict
                    ) -> config_lib.RunConfig:
  """The config a run was started with (WORKDIR/config.json), parsed.

  Args:
    workdir: a launch.train work directory.
    defaults: launch/configs/common.base_config(); fills the fields that
      runs saved before they existed lack (config_lib.parse_saved).
  """
  return config_lib.parse_saved(saved_config_json(workdir), defaults)


def saved_config_json(workdir: str, named_as: str | None = None
                      ) -> dict[str, Any]:
  """WORKDIR/config.json as saved, unparsed; `named_as` names the workdir in
  the error (e.g. the flag that gave it)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise errors.ConfigError(
        f'{path}: not found; is {named_as or workdir} a launch.train work '
        'directory?')
  return files.read_json_object(path)
