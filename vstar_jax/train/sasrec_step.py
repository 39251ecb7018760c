"""SASRec training: cross-entropy on the next item, full or sampled softmax.

Every training window (prefix -> next item) is already one example, so only
the last history position is supervised, as in RecBole with sequence
augmentation. Padding rows (example_mask False) carry no weight. Two losses:

  full      RecBole's "CE": softmax over all N items.
  sampled   softmax over the target and K negatives drawn uniformly (with
            replacement, independently per example) from the N items, as in
            the eSASRec recipe (arXiv 2508.06450, K = 256). A negative equal
            to the target (an "accidental hit") is masked out, so the target
            is never pushed against itself. Uniform proposals need no logQ
            correction (log q is the same constant for every candidate).

Keys: the step key is fold_in(base_key, step); dropout uses it directly (so
full-softmax runs replay the keys they always had) and the negatives use
fold_in(step key, NEGATIVES_STREAM).

Shapes: B batch, T history, N items, K negatives.
"""
import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from vstar_jax.models import sasrec
from vstar_jax.train import state as state_lib

LOSSES = ('full', 'sampled')
NEGATIVE_SAMPLING = ('uniform',)
NEGATIVES_STREAM = 1     # fold_in id of the negatives' key in a step key


def sample_negatives(rng_key, batch_size: int, num_negatives: int,
                     num_items: int) -> jax.Array:
  """Uniform item indices with replacement. -> [B, K] int32 in [0, N)."""
  return jax.random.randint(rng_key, (batch_size, num_negatives), 0,
                            num_items, dtype=jnp.int32)


def sampled_softmax_nll(logits, candidates):
  """NLL of column 0 among the candidates, accidental hits masked.

  Args:
    logits: [B, 1 + K] float32; column 0 is the target's logit.
    candidates: [B, 1 + K] int32; column 0 is the target, then negatives.

  Returns:
    ([B] nll, [B] bool: the target outscores every kept negative).
  """
  chex.assert_equal_shape([logits, candidates])
  is_negative = jnp.arange(candidates.shape[1]) > 0
  hit = is_negative[None] & (candidates == candidates[:, :1])   # [B, 1+K]
  kept = jnp.where(hit, -jnp.inf, logits)
  nll = jax.nn.logsumexp(kept, axis=-1) - logits[:, 0]
  wins = jnp.argmax(kept, -1) == 0
  return nll, wins


def _full_nll(params, batch, rng_key, *, net, train):
  """[B] nll over all N items, [B] bool target ranked first."""
  logits = net.apply({'params': params}, batch['history'],
                     batch['history_mask'], deterministic=not train,
                     rngs={'dropout': rng_key})                  # [B, N]
  target = jnp.maximum(batch['target'], 0)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, target)
  return nll, jnp.argmax(logits, -1) == target


def _sampled_nll(params, batch, rng_key, *, net, train, num_negatives):
  """[B] nll over the target and K uniform negatives, [B] bool wins."""
  target = jnp.maximum(batch['target'], 0)
  negatives = sample_negatives(
      jax.random.fold_in(rng_key, NEGATIVES_STREAM), target.shape[0],
      num_negatives, net.cfg.num_items)                          # [B, K]
  candidates = jnp.concatenate([target[:, None], negatives], axis=1)
  logits = net.apply({'params': params}, batch['history'],
                     batch['history_mask'], candidates,
                     deterministic=not train, rngs={'dropout': rng_key},
                     method=sasrec.SASRec.candidate_logits)     # [B, 1+K]
  return sampled_softmax_nll(logits, candidates)


def sasrec_loss(params, batch, rng_key, *, net: sasrec.SASRec,
                train: bool = True, num_negatives: int = 0):
  """Mean per-example negative log-likelihood of the target item.

  Args:
    params: SASRec parameters.
    batch: dict with history [B, T] int32, history_mask [B, T] bool,
      target [B] int32, example_mask [B] bool.
    rng_key: the step key (dropout; negatives via NEGATIVES_STREAM).
    net: the module (static).
    train: enables dropout.
    num_negatives: 0 = full softmax; K > 0 = sampled softmax with K
      uniform negatives.

  Returns:
    (loss, metrics dict of scalars). `acc` is the fraction of examples whose
    target outscores all items (full) or all kept negatives (sampled).
  """
  chex.assert_rank([batch['history'], batch['target'], batch['example_mask']],
                   [2, 1, 1])
  if num_negatives > 0:
    nll, correct = _sampled_nll(params, batch, rng_key, net=net, train=train,
                                num_negatives=num_negatives)
  else:
    nll, correct = _full_nll(params, batch, rng_key, net=net, train=train)
  weight = batch['example_mask'].astype(jnp.float32)
  denom = jnp.maximum(weight.sum(), 1.0)
  loss = jnp.where(batch['example_mask'], nll, 0.0).sum() / denom
  metrics = {'loss': loss, 'examples': weight.sum(),
             'acc': (correct * weight).sum() / denom}
  return loss, metrics


def make_sasrec_step(net: sasrec.SASRec, *, num_negatives: int = 0
                     ) -> Callable:
  """Returns step(state, batch, trie, base_key) -> (state, metrics).

  `trie` is unused (the loop's Recommender interface passes it to every
  family). The caller jits the step (donating the state). The step key is
  fold_in(base_key, state.step), so a resumed run replays the same dropout
  masks and negatives. num_negatives: 0 = full softmax, else sampled.
  """
  if num_negatives < 0:
    raise ValueError(f'num_negatives must be >= 0, got {num_negatives}')
  loss_fn = functools.partial(sasrec_loss, net=net,
                              num_negatives=num_negatives)

  def sasrec_step(state: state_lib.TrainState, batch, trie, base_key):
    del trie
    rng_key = jax.random.fold_in(base_key, state.step)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        state.params, batch, rng_key)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return state.apply_gradients(grads), metrics

  return sasrec_step
