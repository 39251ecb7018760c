"""Semantic IDs: residual k-means tokenizer, collision resolution, stats,
the end-to-end build and the device-side prefix trie (index files are
read and written by vstar_jax.data.sid_index)."""
