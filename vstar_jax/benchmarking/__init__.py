"""Measuring harness for `launch/benchmark.py`: timing, FLOP counts, the
machine description and a host dict-trie reference beam search."""
