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


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int,
                  end_ratio: float = 0.0) -> optax.Schedule:
  """Linear warmup to `peak`, cosine decay to peak * end_ratio at the end."""
  total_steps = max(total_steps, 1)
  warmup_steps = min(warmup_steps, total_steps - 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=peak * end_ratio)


def make_optimizer(*, learning_rate: float, total_steps: int,
                   warmup_steps: int, weight_decay: float, grad_clip: float,
                   end_lr_ratio: float = 0.0, b2: float = 0.999
                   ) -> optax.GradientTransformation:
  """AdamW with linear warmup, cosine decay and global-norm clipping."""
  if total_steps <= 0:
    raise ValueError(f'total_steps must be positive, got {total_steps}')
  schedule = warmup_cosine(learning_rate, total_steps, warmup_steps,
                           end_lr_ratio)
  return optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.adamw(schedule, b2=b2, weight_decay=weight_decay,
                  mask=_decay_mask))


def make_rl_optimizer(*, policy_lr: float, value_lr: float, total_steps: int,
                      warmup_steps: int, value_warmup_steps: int,
                      weight_decay: float, grad_clip: float,
                      param_labels) -> optax.GradientTransformation:
  """Policy and value parameters under one transformation, two schedules.

  The policy's learning rate is 0 for the first `value_warmup_steps` (value
  warm-up), then warms up linearly and decays by cosine; the value head's is
  constant. `param_labels(params)` labels leaves 'policy' or 'value'.
  """
  rl_steps = max(total_steps - value_warmup_steps, 1)
  policy_schedule = optax.join_schedules(
      [optax.constant_schedule(0.0),
       warmup_cosine(policy_lr, rl_steps, warmup_steps)],
      boundaries=[value_warmup_steps])
  adamw = lambda lr: optax.adamw(lr, weight_decay=weight_decay,
                                 mask=_decay_mask)
  return optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.multi_transform({'policy': adamw(policy_schedule),
                             'value': adamw(value_lr)}, param_labels))
