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
              'length)',
      net=net)


def from_config(config: ml_collections.ConfigDict,
                exp: experiment_lib.Experiment) -> Recommender:
  kinds = {'sid': sid_recommender}
  if config.model.kind not in kinds:
    raise experiment_lib.ConfigError(
        f'config.model.kind={config.model.kind!r}: expected one of '
        f'{sorted(kinds)}')
  return kinds[config.model.kind](config, exp)
