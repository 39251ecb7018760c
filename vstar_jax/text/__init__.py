"""Item text encoder: item metadata -> text -> MiniLM sentence embeddings.

Import the submodules directly: `item_text` (pure Python, no JAX), `minilm`
(the flax model and its loaders) and `embed` (batched, cached embedding).
Nothing is re-exported here so that `item_text` stays importable without JAX.
"""
