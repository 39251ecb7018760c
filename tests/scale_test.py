"""Scale-bench helpers: the pod estimate arithmetic and synthetic data."""
import numpy as np
import pytest

from vstar_jax.bench import scale
from tests import toys

CFG = toys.policy_config(vocab_size=8, max_history=5, width=128, num_layers=2,
                         num_heads=4, dropout_rate=0.1, value_width=128)


def test_estimate_is_peak_times_utilisation_over_flops():
  est = scale.estimate(2e9, 1000, mfu=0.25)
  assert set(est) == {'v5e-64', '8xH100'}
  assert est['v5e-64']['examples_per_s'] == pytest.approx(
      64 * 197e12 * 0.25 / 2e9)
  assert est['8xH100']['examples_per_s'] == pytest.approx(
      8 * 989e12 * 0.25 / 2e9)
  for e in est.values():
    assert e['epoch_s'] == pytest.approx(1000 / e['examples_per_s'])


def test_synthetic_workload_shapes():
  w = scale.Workload(cfg=CFG, num_items=100)
  trie = scale.synthetic_trie(w)
  assert trie.num_items == 100
  codes = np.asarray(trie.codes)
  assert len({tuple(c) for c in codes}) == 100
  (b,) = scale.synthetic_batches(w, 6, 1)
  assert b['history'].shape == b['history_mask'].shape == (6, 5)
  assert b['history'].max() < 100 and b['target'].shape == (6,)
  assert b['history_mask'].any(axis=1).all()
