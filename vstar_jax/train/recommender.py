"""The model families the training loop can run, behind one interface.

The loop only needs to initialise parameters, take an SFT step and rank the
full catalogue for a batch of users; each family supplies those pure
functions (the loop jits them).
"""
import dataclasses
import functools
from typing import Any, Callable

import ml_collections

from vstar_jax import experiment as experiment_lib
from vstar_jax.eval import evaluate as evaluate_lib
from vstar_jax.models import policy
from vstar_jax.models import sasrec
from vstar_jax.train import sasrec_step
from vstar_jax.train import sft

# The one rule for every model family (the TIGER / LC-Rec protocol): the
# ranked list is over the full catalogue and may hold items of the user's own
# history.
HISTORY_RULE = 'items already in the history are NOT masked'


@dataclasses.dataclass(frozen=True)
class Recommender:
  """Pure functions of one model family (all un-jitted)."""
  kind: str
  # init(rng_key) -> params
  init: Callable[[Any], Any]
  # train_step(state, batch, trie, base_key) -> (state, metrics)
  train_step: Callable[..., Any]
  # make_rank_fn(list_len) -> rank(params, trie, history, history_mask)
  #   -> object with .items [B, list_len] (best first, -1 = empty)
  make_rank_fn: Callable[[int], Callable[..., Any]]
  # How the ranked list is produced (recorded in results.json).
  ranking: str
  # The SID policy network (None for ID-based models).
  net: Any = None


def sid_recommender(config: ml_collections.ConfigDict,
                    exp: experiment_lib.Experiment) -> Recommender:
  """The generative SID policy (spec sections 3-4)."""
  net = policy.PolicyValueNet(experiment_lib.policy_config(config, exp))
  return Recommender(
      kind='sid',
      init=functools.partial(policy.init_params, net.cfg),
      train_step=sft.make_sft_step(
          net, constrained=config.sft.constrained_softmax),
      make_rank_fn=lambda k: evaluate_lib.make_rank_fn(net, beam_width=k),
      ranking='full catalogue, trie-constrained beam search (width = list '
              f'length); {HISTORY_RULE}',
      net=net)


def sasrec_config(config: ml_collections.ConfigDict,
                  exp: experiment_lib.Experiment) -> sasrec.SasrecConfig:
  """SASRec's static config from the run config and the catalogue."""
  m = config.model
  if m.width % m.num_heads:
    raise experiment_lib.ConfigError(
        f'config.model.width={m.width} is not divisible by '
        f'config.model.num_heads={m.num_heads}')
  if m.dtype not in ('float32', 'bfloat16'):
    raise experiment_lib.ConfigError(
        f"config.model.dtype={m.dtype!r}: expected 'float32' or 'bfloat16'")
  return sasrec.SasrecConfig(
      num_items=exp.dataset.num_items, max_history=config.data.max_history,
      width=m.width, num_layers=m.num_layers, num_heads=m.num_heads,
      inner_width=m.width * m.mlp_ratio, hidden_dropout_rate=m.dropout_rate,
      attn_dropout_rate=m.attn_dropout_rate, dtype=m.dtype)


def sasrec_num_negatives(config: ml_collections.ConfigDict) -> int:
  """0 for the full softmax, else the sampled softmax's K (config.sasrec)."""
  c = config.sasrec
  if c.loss not in sasrec_step.LOSSES:
    raise experiment_lib.ConfigError(
        f'config.sasrec.loss={c.loss!r}: expected one of '
        f'{list(sasrec_step.LOSSES)}')
  if c.negative_sampling not in sasrec_step.NEGATIVE_SAMPLING:
    raise experiment_lib.ConfigError(
        f'config.sasrec.negative_sampling={c.negative_sampling!r}: expected '
        f'one of {list(sasrec_step.NEGATIVE_SAMPLING)}')
  if c.loss == 'full':
    return 0
  if not isinstance(c.num_negatives, int) or c.num_negatives < 1:
    raise experiment_lib.ConfigError(
        f'config.sasrec.num_negatives={c.num_negatives!r}: expected a '
        f'positive integer for the sampled loss')
  return c.num_negatives


def sasrec_recommender(config: ml_collections.ConfigDict,
                       exp: experiment_lib.Experiment) -> Recommender:
  """SASRec, the ID-based baseline (full or sampled softmax over ids)."""
  net = sasrec.SASRec(sasrec_config(config, exp))
  num_negatives = sasrec_num_negatives(config)

  def make_rank_fn(list_len: int):
    if list_len > net.cfg.num_items:
      raise experiment_lib.ConfigError(
          f'list length {list_len} (config.eval.beam_width / valid_beam) '
          f'exceeds the {net.cfg.num_items} items')

    def rank(params, trie, history, history_mask):
      del trie
      return sasrec.top_items(net, params, history, history_mask,
                              list_len=list_len)
    return rank

  return Recommender(
      kind='sasrec',
      init=functools.partial(sasrec.init_params, net),
      train_step=sasrec_step.make_sasrec_step(net,
                                              num_negatives=num_negatives),
      make_rank_fn=make_rank_fn,
      ranking=f'full catalogue, exact top-K of the item logits; '
              f'{HISTORY_RULE}')


def from_config(config: ml_collections.ConfigDict,
                exp: experiment_lib.Experiment) -> Recommender:
  kinds = {'sid': sid_recommender, 'sasrec': sasrec_recommender}
  if config.model.kind not in kinds:
    raise experiment_lib.ConfigError(
        f'config.model.kind={config.model.kind!r}: expected one of '
        f'{sorted(kinds)}')
  return kinds[config.model.kind](config, exp)
