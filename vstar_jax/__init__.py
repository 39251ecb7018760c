"""vstar_jax: V-STAR generative recommendation in JAX.

Library code only: no flags, no jax.config changes and no jit calls at import.
"""
