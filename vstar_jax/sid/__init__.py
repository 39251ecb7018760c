"""Semantic IDs: residual k-means tokenizer, collision resolution, stats,
LC-Rec index files and the device-side prefix trie."""
