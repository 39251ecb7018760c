"""Toy model configs shared by the unit tests."""
from vstar_jax.models import policy

_POLICY_DEFAULTS = dict(num_levels=3, vocab_size=4, max_history=4, width=16,
                        num_layers=1, num_heads=2, mlp_ratio=4,
                        dropout_rate=0.0, value_width=8,
                        value_grad_to_trunk=True, dtype='float32')


def policy_config(**fields) -> policy.PolicyConfig:
  """A small float32 PolicyConfig; `fields` override the toy defaults."""
  return policy.PolicyConfig(**{**_POLICY_DEFAULTS, **fields})
