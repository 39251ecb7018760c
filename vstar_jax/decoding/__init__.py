"""Turning a policy into candidates: trie-constrained beam search, sampling
and VED side by side, all returning `types.Candidates`."""
