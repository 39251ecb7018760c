"""Training state and optimiser.

Policy and value parameters live in one pytree and share one optax
transformation, so a single update moves both (the design card's "jit-compiled
together").
"""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes. Per-step keys are fold_in(base_key, step)."""
  step: jax.Array          # [] int32, number of updates applied
  params: Any
  opt_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation) -> 'TrainState':
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), tx=tx)

  def apply_gradients(self, grads) -> 'TrainState':
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1,
                        params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)


def _decay_mask(params):
  """Weight decay on matrices only (no biases, LayerNorm scales)."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(*, learning_rate: float, total_steps: int,
                   warmup_steps: int, weight_decay: float, grad_clip: float,
                   end_lr_ratio: float = 0.0, b2: float = 0.999
                   ) -> optax.GradientTransformation:
  """AdamW with linear warmup, cosine decay and global-norm clipping."""
  if total_steps <= 0:
    raise ValueError(f'total_steps must be positive, got {total_steps}')
  warmup_steps = min(warmup_steps, total_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=learning_rate * end_lr_ratio)
  return optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.adamw(schedule, b2=b2, weight_decay=weight_decay,
                  mask=_decay_mask))
