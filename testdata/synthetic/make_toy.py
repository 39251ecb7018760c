"""Regenerates the toy dataset in this folder (deterministic).

  PYTHONPATH=. python testdata/synthetic/make_toy.py

40 items with unique 3-level SIDs (codebooks 4/4/4), 30 users with 3..12
chronological interactions and timestamps on a coarse grid (so users tie).
"""
import pathlib

import numpy as np

from vstar_jax.data import files
from vstar_jax.data import sid_index

NUM_ITEMS, NUM_USERS = 40, 30
HERE = pathlib.Path(__file__).resolve().parent


def main():
  rng = np.random.default_rng(20240601)
  all_codes = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing='ij'), -1)
  codes = rng.permutation(all_codes.reshape(-1, 3))[:NUM_ITEMS]
  items = {
      str(n): {'title': f'Toy item {n}.',
               'description': '' if n % 7 == 0 else f'About item {n}.',
               'brand': f'Brand {n % 5}',
               'categories': f'Toys, Level {codes[n, 0]}'}
      for n in range(NUM_ITEMS)}
  inter, time = {}, {}
  for u in range(NUM_USERS):
    length = 3 + u % 10
    inter[str(u)] = rng.choice(NUM_ITEMS, length, replace=False).tolist()
    steps = rng.integers(0, 3, length)  # 0 steps: equal timestamps
    time[str(u)] = (1_600_000_000 + 1000 * np.cumsum(steps)).tolist()
  files.write_json_files({HERE / 'toy.inter.json': inter,
                          HERE / 'toy.item.json': items,
                          HERE / 'toy.time.json': time})
  sid_index.write_sid_index(HERE / 'toy.index.json', codes,
                            [str(n) for n in range(NUM_ITEMS)])


if __name__ == '__main__':
  main()
