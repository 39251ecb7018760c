"""Measuring harness for launch/ only (benchmark, scale_bench): timing, FLOP
counts, the machine description, a host dict-trie reference beam search and
the rollout comparison at equal budgets. Not part of the method."""
