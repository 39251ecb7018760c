"""The run config, typed and checked once at start-up.

`parse` turns the whole ml_collections ConfigDict of a run into frozen
dataclasses and checks every field (type, range, allowed values, cross-field
constraints), the fields of stages this run will not execute included. The
ConfigDict files in launch/configs set the values (their defaults live in
launch/configs/common.py only); the dataclasses below define the types and
constraints. A field is one line: `name: type = _field(check, ...)`.

Checks that need the data or the devices run as soon as those are known,
before anything is written: `check_levels` (SID depth L) and
`check_batch_sizes` (the mesh). The `*_config` functions at the end
build the library's static configs (policy, SASRec, rollout, RL objective)
from a parsed RunConfig; nothing else translates config fields.

Every problem raises errors.ConfigError with one line naming the field and
what it allows, e.g. "config.sft.batch_size=-1: must be >= 1".
"""
import dataclasses
import difflib
import math
import typing
from typing import Any, Callable, Optional

import jax
import ml_collections

from vstar_jax import errors
from vstar_jax import parallel
from vstar_jax.data import sid_index
from vstar_jax.data import splits
from vstar_jax.decoding import beam as beam_lib
from vstar_jax.models import policy
from vstar_jax.models import sasrec
from vstar_jax.rl import rewards
from vstar_jax.rl import rollout as rollout_lib
from vstar_jax.decoding.ved import search
from vstar_jax.rl import step as rl_step_lib
from vstar_jax.sid import collisions as sid_collisions

STAGES = ('sft', 'rl')
SID_INPUTS = ('text', 'cf', 'text+cf')
MODEL_KINDS = ('sid', 'sasrec')
DTYPES = ('float32', 'bfloat16')

# value -> None if fine, else what is wrong ("must be >= 1").
Check = Callable[[Any], Optional[str]]


def _field(*checks: Check) -> Any:
  """A required dataclass field with value checks (run after the type's)."""
  return dataclasses.field(metadata={'checks': checks})


def at_least(low) -> Check:
  return lambda v: None if v >= low else f'must be >= {low}'


def above(low) -> Check:
  return lambda v: None if v > low else f'must be > {low}'


def between(low, high) -> Check:
  return lambda v: None if low <= v <= high else (
      f'must be in [{low}, {high}]')


def one_of(*choices) -> Check:
  allowed = ', '.join(repr(c) for c in choices)
  return lambda v: None if v in choices else f'expected one of {allowed}'


def _item_embeddings(spec: str) -> Optional[str]:
  if spec == 'text' or spec.endswith('.npy') or (
      spec.startswith('attributes:') and len(spec) > len('attributes:')):
    return None
  return "expected 'text', 'attributes:PATH' or a .npy path"


def _cf_model(spec: str) -> Optional[str]:
  path = spec.split(':', 1)[0]
  if not spec or path.endswith('.py'):
    return None
  return "expected '' or a config file PATH.py[:ARG], like --config"


def _stages(stages: str) -> Optional[str]:
  names = tuple(s.strip() for s in stages.split(','))
  if names not in (('sft',), ('rl',), STAGES):
    return "expected 'sft', 'rl' or 'sft,rl'"
  return None


def _below_one(v) -> Optional[str]:
  return None if 0.0 <= v < 1.0 else 'must be in [0, 1)'


def _finite(v) -> Optional[str]:
  return None if math.isfinite(v) else 'must be finite'


# -- the run config ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dir: str = _field()
  name: str = _field()
  index: Optional[str] = _field()          # None/'': build SIDs (SidConfig)
  protocol: str = _field(one_of('leave_one_out', 'chronological'))
  max_history: int = _field(at_least(1))
  sid_collisions: str = _field(one_of('error', 'extra_level'))
  fresh_windows: int = _field(at_least(0))   # issue 12's RL prompt pool


@dataclasses.dataclass(frozen=True)
class SidConfig:
  """Our SID tokenizer, used when data.index is empty."""
  num_levels: int = _field(between(1, len(sid_index.LEVEL_LETTERS) - 1))
  codebook_size: int = _field(between(2, sid_index.MAX_CODE))
  num_iters: int = _field(between(0, 10_000))
  balanced: bool = _field()
  collisions: str = _field(one_of(*sid_collisions.METHODS))
  seed: int = _field()
  inputs: str = _field(one_of(*SID_INPUTS))   # what residual k-means reads
  cf_model: str = _field(_cf_model)   # config file of the CF model ('cf')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  kind: str = _field(one_of(*MODEL_KINDS))
  width: int = _field(at_least(1))
  num_layers: int = _field(at_least(1))
  num_heads: int = _field(at_least(1))
  mlp_ratio: int = _field(at_least(1))
  dropout_rate: float = _field(between(0.0, 1.0))
  attn_dropout_rate: float = _field(between(0.0, 1.0))   # sasrec only
  value_width: int = _field(at_least(1))
  value_grad_to_trunk: bool = _field()
  dtype: str = _field(one_of(*DTYPES))
  item_id_embedding: bool = _field()       # sid only: hybrid ID + SID inputs


@dataclasses.dataclass(frozen=True)
class _StageSettings:
  """Fields every training stage has."""
  batch_size: int = _field(at_least(1))
  num_epochs: int = _field(at_least(0))
  num_steps: int = _field(at_least(0))       # > 0 overrides num_epochs
  warmup_steps: int = _field(at_least(0))
  weight_decay: float = _field(at_least(0.0))
  grad_clip: float = _field(above(0.0))
  eval_every: int = _field(at_least(1))
  early_stop_patience: int = _field(at_least(0))


@dataclasses.dataclass(frozen=True)
class SftConfig(_StageSettings):
  learning_rate: float = _field(above(0.0), _finite)
  end_lr_ratio: float = _field(between(0.0, 1.0))   # 1: constant after warmup
  constrained_softmax: bool = _field()
  train_on: str = _field(one_of(*splits.SFT_TRAIN_ON))
  label_smoothing: float = _field(_below_one)   # sid only


@dataclasses.dataclass(frozen=True)
class SasrecSettings:
  """config.sasrec: the ID baseline's loss (model.kind='sasrec')."""
  loss: str = _field(one_of('full', 'sampled'))
  num_negatives: int = _field(at_least(1))   # read when loss='sampled'
  negative_sampling: str = _field(one_of('uniform'))


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
  """config.rollout: how RL draws its candidate groups."""
  kind: str = _field(one_of(*rollout_lib.ROLLOUT_KINDS))
  num_candidates: int = _field(at_least(1))
  beam_width: int = _field(at_least(1))
  temperature: float = _field(above(0.0))
  ved_init_beam: int = _field(at_least(1))
  ved_kappa: float = _field(above(0.0))
  ved_budget: int = _field(at_least(0))      # > 0 overrides ved_kappa
  ved_lambda: float = _field(_finite)
  ved_beta: float = _field(at_least(0.0))
  ved_evaluate_leaves: bool = _field()       # False: leaves from parents
  ved_rank: str = _field(one_of(*search.RANKINGS))
  ved_rank_weight: float = _field(_finite)   # w in 'mixed'
  ved_selection: str = _field(one_of(*search.SELECTIONS))
  ved_normalize_depth: bool = _field()
  ved_nodes_per_iter: int = _field(at_least(1))
  ved_diagnose_values: bool = _field()       # V on every node (rl/ved/*)
  ved_gate_filters: bool = _field()          # gate before selection


@dataclasses.dataclass(frozen=True)
class RlSettings(_StageSettings):
  """config.rl: the RL stage's optimisation and objective."""
  learning_rate: float = _field(at_least(0.0), _finite)
  value_learning_rate: float = _field(at_least(0.0), _finite)
  reward: str = _field(one_of(*rewards.REWARD_KINDS))
  grpo_weight: float = _field(at_least(0.0))
  sibling_alpha: float = _field(at_least(0.0))
  sibling_min_std: float = _field(at_least(0.0))
  clip_eps: float = _field(above(0.0))
  updates_per_rollout: int = _field(at_least(1))
  kl_beta: float = _field(at_least(0.0))
  value_coef: float = _field(at_least(0.0))
  gamma: float = _field(between(0.0, 1.0))
  step_weights: tuple[float, ...] = _field()  # one per SID level (check_levels)
  value_warmup_steps: int = _field(at_least(0))
  item_embeddings: str = _field(_item_embeddings)
  replay_sft_windows: bool = _field()        # with data.fresh_windows > 0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  beam_width: int = _field(at_least(1))      # reporting list length
  valid_beam: int = _field(at_least(1))      # during training
  valid_subset: int = _field()               # users; <= 0 means all
  batch_size: int = _field(at_least(1))
  head_fraction: float = _field(between(0.0, 1.0))
  validate_start: bool = _field()            # step 0 of a trained start
  exclude_history: bool = _field()           # eval/history_rule.py


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = _field(lambda v: None if v == -1 or v >= 1 else (
      'must be >= 1, or -1 (all devices that mesh.model leaves)'))
  model: int = _field(at_least(1))
  fsdp: bool = _field()
  fsdp_min_size: int = _field(at_least(0))


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  every_steps: int = _field(at_least(1))
  keep: int = _field(at_least(1))


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a run reads (launch/configs/common.py documents each)."""
  seed: int = _field()
  stages: str = _field(_stages)
  init_from: str = _field()
  log_every: int = _field(at_least(1))
  stop_after_steps: int = _field(at_least(0))
  steps_per_call: int = _field(at_least(1))  # N steps per jitted dispatch
  embedding_cache_dir: str = _field()
  ablation: str = _field()                   # a label (launch/configs/ablation)
  data: DataConfig = _field()
  sid: SidConfig = _field()
  model: ModelConfig = _field()
  sft: SftConfig = _field()
  sasrec: SasrecSettings = _field()
  rollout: RolloutSettings = _field()
  rl: RlSettings = _field()
  eval: EvalConfig = _field()
  mesh: MeshConfig = _field()
  checkpoint: CheckpointConfig = _field()

  @property
  def stage_list(self) -> tuple[str, ...]:
    """The stages to run, in order."""
    return tuple(s.strip() for s in self.stages.split(','))

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready nested dict (WORKDIR/config.json, results.json)."""
    return dataclasses.asdict(self)


# -- parsing -------------------------------------------------------------------


def _typed(value: Any, tp: Any, where: str) -> Any:
  """`value` as type `tp` (ints widen to floats, lists become tuples)."""
  def bad(expected: str):
    return errors.ConfigError(f'{where}={value!r}: expected {expected}')
  if tp is bool:
    if not isinstance(value, bool):
      raise bad('True or False')
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise bad('an int')
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad('a number')
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise bad('a string')
    return value
  if tp == Optional[str]:
    if value is not None and not isinstance(value, str):
      raise bad('a string or None')
    return value or None
  if typing.get_origin(tp) is tuple:
    if not isinstance(value, (tuple, list)):
      raise bad('a sequence of numbers')
    return tuple(_typed(v, float, f'{where}[{i}]')
                 for i, v in enumerate(value))
  raise TypeError(f'{where}: unsupported field type {tp}')


def _parse_node(cls: type, node: Any, where: str) -> Any:
  if not isinstance(node, (ml_collections.ConfigDict, dict)):
    raise errors.ConfigError(f'{where}={node!r}: expected a group of fields')
  node = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else (
      node)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  for key in node:
    if key not in fields:
      close = difflib.get_close_matches(key, list(fields), n=1)
      hint = (f'did you mean {where}.{close[0]}?' if close else
              f'{where} has {", ".join(fields)}')
      raise errors.ConfigError(f'{where}.{key}: unknown config field; {hint}')
  hints = typing.get_type_hints(cls)
  values = {}
  for name, field in fields.items():
    path = f'{where}.{name}'
    if name not in node:
      raise errors.ConfigError(
          f'{path}: missing (launch/configs/common.py sets every field)')
    tp = hints[name]
    if dataclasses.is_dataclass(tp):
      values[name] = _parse_node(tp, node[name], path)
      continue
    value = _typed(node[name], tp, path)
    for check in field.metadata['checks']:
      problem = check(value)
      if problem:
        raise errors.ConfigError(f'{path}={node[name]!r}: {problem}')
    values[name] = value
  return cls(**values)


def parse(config: ml_collections.ConfigDict | dict) -> RunConfig:
  """The typed, checked RunConfig of a ConfigDict (or its to_dict()).

  Raises:
    errors.ConfigError: one line naming the first bad field.
  """
  cfg = _parse_node(RunConfig, config, 'config')
  _check_cross_fields(cfg)
  return cfg


# Fields that runs saved before they were removed (model.size: the model size
# is chosen by the config argument, e.g. scientific.py:tiger).
RETIRED_FIELDS = ('model.size',)


def parse_saved(saved: dict[str, Any],
                defaults: ml_collections.ConfigDict) -> RunConfig:
  """A run's saved config (config.json) laid over today's defaults.

  Fields added since the run keep their default (the behaviour before they
  existed); RETIRED_FIELDS are dropped; anything else unknown is an error.
  """
  merged = defaults.to_dict()

  def lay(node: dict[str, Any], into: dict[str, Any], prefix: str) -> None:
    for key, value in node.items():
      path = f'{prefix}{key}'
      if path in RETIRED_FIELDS:
        continue
      if isinstance(value, dict) and isinstance(into.get(key), dict):
        lay(value, into[key], f'{path}.')
      else:
        into[key] = value
  lay(saved, merged, '')
  return parse(merged)


def _check_cross_fields(cfg: RunConfig) -> None:
  m = cfg.model
  if m.width % m.num_heads:
    raise errors.ConfigError(
        f'config.model.width={m.width} is not divisible by '
        f'config.model.num_heads={m.num_heads}')
  if cfg.sft.num_steps == 0 and cfg.sft.num_epochs == 0:
    raise errors.ConfigError('config.sft.num_steps=0 and config.sft.'
                             'num_epochs=0: set one of them > 0')
  if (cfg.rl.num_steps == 0 and cfg.rl.num_epochs == 0 and
      cfg.rl.value_warmup_steps == 0):   # value pre-training alone is a run
    raise errors.ConfigError('config.rl.num_steps=0, config.rl.num_epochs=0 '
                             'and config.rl.value_warmup_steps=0: set one of '
                             'them > 0')
  if cfg.rl.value_warmup_steps and cfg.rl.value_coef == 0:
    raise errors.ConfigError(
        f'config.rl.value_warmup_steps={cfg.rl.value_warmup_steps} trains '
        'the value head alone: needs config.rl.value_coef > 0')
  if cfg.data.fresh_windows and cfg.data.protocol != 'leave_one_out':
    raise errors.ConfigError(
        f'config.data.fresh_windows={cfg.data.fresh_windows}: needs '
        "config.data.protocol='leave_one_out' (windows before each user's "
        'validation item)')
  if 'cf' in cfg.sid.inputs.split('+') and not cfg.sid.cf_model:
    raise errors.ConfigError(
        f'config.sid.inputs={cfg.sid.inputs!r} reads the item table of a '
        "CF model: set config.sid.cf_model to its config file")
  r = cfg.rollout
  if r.kind == 'beam' and r.beam_width < r.num_candidates:
    raise errors.ConfigError(
        f'config.rollout.beam_width={r.beam_width}: must be >= '
        f'config.rollout.num_candidates={r.num_candidates} for kind=beam')
  if 'rl' in cfg.stage_list and 'sft' not in cfg.stage_list and (
      not cfg.init_from):
    raise errors.ConfigError(
        "config.init_from='': config.stages='rl' starts from the SFT "
        'checkpoint of a run directory; set config.init_from to one')
  if m.kind != 'sid':
    for name, value, off in (('model.item_id_embedding', m.item_id_embedding,
                              False),
                             ('sft.label_smoothing', cfg.sft.label_smoothing,
                              0.0)):
      if value != off:
        raise errors.ConfigError(
            f'config.{name}={value!r}: a SID-policy switch; '
            f'config.model.kind={m.kind!r} needs {off!r}')
  if 'rl' in cfg.stage_list and m.kind != 'sid':
    raise errors.ConfigError(
        f'config.stages={cfg.stages!r}: config.model.kind={m.kind!r} has no '
        "SID policy for RL (expected 'sid')")
  _check_cadences(cfg)


def _check_cadences(cfg: RunConfig) -> None:
  """Logging, evaluation, checkpoints and stops happen between dispatches
  of steps_per_call steps, so their cadences must be multiples of it (only
  the stages this run executes are checked; 0 means 'off' where allowed)."""
  n = cfg.steps_per_call
  fields = {'log_every': cfg.log_every,
            'stop_after_steps': cfg.stop_after_steps,
            'checkpoint.every_steps': cfg.checkpoint.every_steps}
  for stage in cfg.stage_list:
    settings = getattr(cfg, stage)
    fields[f'{stage}.eval_every'] = settings.eval_every
    fields[f'{stage}.num_steps'] = settings.num_steps
  for name, value in fields.items():
    if value % n:
      raise errors.ConfigError(
          f'config.{name}={value} is not a multiple of '
          f'config.steps_per_call={n}')


def check_levels(cfg: RunConfig, num_levels: int) -> None:
  """Checks the RL fields that depend on the SID length L of the data.

  Runs when 'rl' is among the stages (an SFT run on an L=4 index keeps the
  default 3 step weights harmlessly; the RL run from it sets 4).
  """
  if 'rl' not in cfg.stage_list:
    return
  weights = cfg.rl.step_weights
  if len(weights) != num_levels:
    raise errors.ConfigError(
        f'config.rl.step_weights={weights} needs one weight per SID level '
        f'(L={num_levels})')
  rollout_config(cfg, num_levels)    # VED budget vs. its init beam cost


def check_batch_sizes(cfg: RunConfig, mesh: jax.sharding.Mesh) -> None:
  """Every batch the run splits must divide over the data axis and hosts."""
  for stage in cfg.stage_list:
    parallel.check_batch_size(mesh, getattr(cfg, stage).batch_size,
                              f'{stage}.batch_size')
  parallel.check_batch_size(mesh, cfg.eval.batch_size, 'eval.batch_size')


# -- the library's static configs --------------------------------------------


def policy_config(cfg: RunConfig, *, num_levels: int, vocab_size: int,
                  num_items: int) -> policy.PolicyConfig:
  """The policy's architecture; num_items = N of the catalogue."""
  m = cfg.model
  return policy.PolicyConfig(
      num_levels=num_levels, vocab_size=vocab_size,
      max_history=cfg.data.max_history, width=m.width,
      num_layers=m.num_layers, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
      dropout_rate=m.dropout_rate, value_width=m.value_width,
      value_grad_to_trunk=m.value_grad_to_trunk, dtype=m.dtype,
      num_items=num_items if m.item_id_embedding else 0)


def sasrec_config(cfg: RunConfig, *, num_items: int) -> sasrec.SasrecConfig:
  m = cfg.model
  return sasrec.SasrecConfig(
      num_items=num_items, max_history=cfg.data.max_history,
      width=m.width, num_layers=m.num_layers, num_heads=m.num_heads,
      inner_width=m.width * m.mlp_ratio, hidden_dropout_rate=m.dropout_rate,
      attn_dropout_rate=m.attn_dropout_rate, dtype=m.dtype)


def rollout_config(cfg: RunConfig,
                   num_levels: int) -> rollout_lib.RolloutConfig:
  """RolloutConfig; VED's budget is ved_budget or kappa x beam cost."""
  r = cfg.rollout
  budget = r.ved_budget if r.ved_budget > 0 else round(
      r.ved_kappa * beam_lib.decode_cost(num_levels, r.ved_init_beam))
  out = rollout_lib.RolloutConfig(
      kind=r.kind, num_candidates=r.num_candidates, beam_width=r.beam_width,
      temperature=r.temperature,
      ved=search.VedConfig(
          budget=budget, init_beam=r.ved_init_beam,
          num_candidates=r.num_candidates, lam=r.ved_lambda,
          beta=r.ved_beta, temperature=r.temperature,
          evaluate_leaves=r.ved_evaluate_leaves, rank=r.ved_rank,
          rank_weight=r.ved_rank_weight, selection=r.ved_selection,
          normalize_depth=r.ved_normalize_depth,
          nodes_per_iter=r.ved_nodes_per_iter,
          diagnose_values=r.ved_diagnose_values,
          gate_filters=r.ved_gate_filters))
  try:
    out.validate(num_levels)
  except ValueError as e:
    raise errors.ConfigError(f'config.rollout: {e}') from None
  return out


def rl_config(cfg: RunConfig) -> rl_step_lib.RLConfig:
  c = cfg.rl
  return rl_step_lib.RLConfig(
      reward=c.reward, grpo_weight=c.grpo_weight,
      sibling_alpha=c.sibling_alpha, sibling_min_std=c.sibling_min_std,
      clip_eps=c.clip_eps, updates_per_rollout=c.updates_per_rollout,
      kl_beta=c.kl_beta, value_coef=c.value_coef, gamma=c.gamma,
      step_weights=c.step_weights, value_warmup_steps=c.value_warmup_steps)
