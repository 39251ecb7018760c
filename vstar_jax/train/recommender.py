"""The model families the training loop can run, behind one interface.

The loop only needs to initialise parameters, take an SFT step and rank the
full catalogue for a batch of users; each family supplies those pure
functions (the loop jits them).
"""
import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from vstar_jax import config as config_lib
from vstar_jax import errors
from vstar_jax import experiment as experiment_lib
from vstar_jax.eval import evaluate as evaluate_lib
from vstar_jax.eval import history_rule
from vstar_jax.models import policy
from vstar_jax.models import sasrec
from vstar_jax.train import sasrec_step
from vstar_jax.train import sft

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


def sid_recommender(config: config_lib.RunConfig,
                    exp: experiment_lib.Experiment) -> Recommender:
  """The generative SID policy (spec sections 3-4)."""
  exclude = config.eval.exclude_history
  net = policy.PolicyValueNet(config_lib.policy_config(
      config, num_levels=exp.num_levels, vocab_size=exp.vocab_size,
      num_items=exp.dataset.num_items))
  return Recommender(
      kind='sid',
      init=functools.partial(policy.init_params, net.cfg),
      train_step=sft.make_sft_step(
          net, constrained=config.sft.constrained_softmax,
          label_smoothing=config.sft.label_smoothing),
      make_rank_fn=lambda k: evaluate_lib.make_rank_fn(
          net, beam_width=k, exclude_history=exclude),
      ranking='full catalogue, trie-constrained beam search (width = list '
              f'length); {history_rule.describe(exclude)}',
      net=net)


def sasrec_recommender(config: config_lib.RunConfig,
                       exp: experiment_lib.Experiment) -> Recommender:
  """SASRec, the ID-based baseline (full or sampled softmax over ids)."""
  net = sasrec.SASRec(config_lib.sasrec_config(
      config, num_items=exp.dataset.num_items))
  exclude = config.eval.exclude_history
  num_negatives = (config.sasrec.num_negatives
                   if config.sasrec.loss == 'sampled' else 0)

  def make_rank_fn(list_len: int):
    if list_len > net.cfg.num_items:
      raise errors.ConfigError(
          f'list length {list_len} (config.eval.beam_width / valid_beam) '
          f'exceeds the {net.cfg.num_items} items')

    def rank(params, trie, history, history_mask):
      del trie
      return sasrec.top_items(net, params, history, history_mask,
                              list_len=list_len, exclude_history=exclude)
    return rank

  return Recommender(
      kind='sasrec',
      init=functools.partial(sasrec.init_params, net),
      train_step=sasrec_step.make_sasrec_step(net,
                                              num_negatives=num_negatives),
      make_rank_fn=make_rank_fn,
      ranking=f'full catalogue, exact top-K of the item logits; '
              f'{history_rule.describe(exclude)}')


def from_config(config: config_lib.RunConfig,
                exp: experiment_lib.Experiment) -> Recommender:
  """The model family of config.model.kind (checked by config.parse)."""
  kinds = {'sid': sid_recommender, 'sasrec': sasrec_recommender}
  return kinds[config.model.kind](config, exp)


def item_table(kind: str, params) -> np.ndarray:
  """The [N, D] item-id embedding of a model's parameters, float32.

  Raises:
    ConfigError: the model has no item-id table (a SID run without
      config.model.item_id_embedding).
  """
  if kind == 'sasrec':
    table = params['item_embed']['embedding']
  elif 'item_embed' in params:
    table = params['item_embed']
  else:
    raise errors.ConfigError(
        f'a {kind!r} run without config.model.item_id_embedding has no '
        'item-id embedding table to export')
  return np.asarray(jax.device_get(table), np.float32)
