"""SASRec training: full-softmax cross-entropy on the next item.

RecBole's "CE" loss: the logits over all N items at the last history
position, against the target item. Every training window (prefix -> next
item) is already one example, so only the last position is supervised, as in
RecBole with sequence augmentation. Padding rows (example_mask False) carry
no weight.

Shapes: B batch, T history, N items.
"""
import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from vstar_jax.models import sasrec
from vstar_jax.train import state as state_lib


def sasrec_loss(params, batch, rng_key, *, net: sasrec.SASRec,
                train: bool = True):
  """Mean per-example negative log-likelihood of the target item.

  Args:
    params: SASRec parameters.
    batch: dict with history [B, T] int32, history_mask [B, T] bool,
      target [B] int32, example_mask [B] bool.
    rng_key: dropout key (consumed).
    net: the module (static).
    train: enables dropout.

  Returns:
    (loss, metrics dict of scalars).
  """
  chex.assert_rank([batch['history'], batch['target'], batch['example_mask']],
                   [2, 1, 1])
  logits = net.apply({'params': params}, batch['history'],
                     batch['history_mask'], deterministic=not train,
                     rngs={'dropout': rng_key})                  # [B, N]
  target = jnp.maximum(batch['target'], 0)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, target)
  weight = batch['example_mask'].astype(jnp.float32)
  denom = jnp.maximum(weight.sum(), 1.0)
  loss = jnp.where(batch['example_mask'], nll, 0.0).sum() / denom
  correct = jnp.argmax(logits, -1) == target
  metrics = {'loss': loss, 'examples': weight.sum(),
             'acc': (correct * weight).sum() / denom}
  return loss, metrics


def make_sasrec_step(net: sasrec.SASRec) -> Callable:
  """Returns step(state, batch, trie, base_key) -> (state, metrics).

  `trie` is unused (the loop's Recommender interface passes it to every
  family). The caller jits the step (donating the state). The dropout key is
  fold_in(base_key, state.step), so a resumed run replays the same keys.
  """
  loss_fn = functools.partial(sasrec_loss, net=net)

  def sasrec_step(state: state_lib.TrainState, batch, trie, base_key):
    del trie
    rng_key = jax.random.fold_in(base_key, state.step)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        state.params, batch, rng_key)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return state.apply_gradients(grads), metrics

  return sasrec_step
