r"""Paired significance of A - B (NDCG@10, HR@10) over the same test users.

  python -m launch.compare RUN_A RUN_B
  python -m launch.compare --a=runs/vstar_s0,runs/vstar_s1,runs/vstar_s2 \
      --b=runs/sft_s0,runs/sft_s1,runs/sft_s2 --out=results/x/vstar_vs_sft
  python -m launch.compare RUN --stage_a=rl --stage_b=sft RUN   # one run

A run is a launch.train work directory (its results.user_ranks/), a results
file X.json (X.user_ranks/ beside it) or such a rank folder itself. A side
given as several runs (seeds) is averaged per user over its runs before
pairing. Stages default to the last stage with per-user ranks of each side.
Prints a Markdown table: mean A, mean B, A - B (absolute and relative to B)
and its percentile-bootstrap CI over users; --out=PREFIX also writes
PREFIX.json and PREFIX.md. Bad input: one line on stderr, exit 1, nothing
written.
"""
import pathlib
import sys

from absl import app
from absl import flags

from vstar_jax.data import files
from vstar_jax.eval import paired
from vstar_jax.eval import user_ranks

_A = flags.DEFINE_list('a', [], 'Runs of side A (seeds), comma-separated.')
_B = flags.DEFINE_list('b', [], 'Runs of side B (seeds), comma-separated.')
_STAGE_A = flags.DEFINE_string('stage_a', None, "Stage of A ('sft', 'rl').")
_STAGE_B = flags.DEFINE_string('stage_b', None, "Stage of B ('sft', 'rl').")
_SPLIT = flags.DEFINE_enum('split', 'test', ['valid', 'test'], 'Split.')
_METRICS = flags.DEFINE_list('metrics', list(paired.DEFAULT_METRICS),
                             'Per-user metrics (hr@k, ndcg@k).')
_RESAMPLES = flags.DEFINE_integer('num_resamples', paired.NUM_RESAMPLES,
                                  'Bootstrap resamples.')
_SEED = flags.DEFINE_integer('seed', 0, 'Bootstrap seed.')
_LEVEL = flags.DEFINE_float('level', 0.95, 'CI level.')
_OUT = flags.DEFINE_string('out', None, 'Writes OUT.json and OUT.md.')


def sides(positional: list[str], a: list[str], b: list[str]
          ) -> tuple[list[str], list[str]]:
  """(runs of A, runs of B) from `RUN_A RUN_B` or --a/--b (not both)."""
  if positional and (a or b):
    raise ValueError('give the runs either as RUN_A RUN_B or as --a/--b')
  if positional:
    if len(positional) != 2:
      raise ValueError(f'expected RUN_A RUN_B, got {len(positional)} '
                       'positional arguments')
    return [positional[0]], [positional[1]]
  if not a or not b:
    raise ValueError('give RUN_A RUN_B, or both --a and --b')
  return a, b


def _compare(argv: list[str]) -> None:
  runs_a, runs_b = sides(argv[1:], _A.value, _B.value)
  comparison = paired.compare(
      [user_ranks.resolve(r) for r in runs_a],
      [user_ranks.resolve(r) for r in runs_b],
      stage_a=_STAGE_A.value, stage_b=_STAGE_B.value, split=_SPLIT.value,
      metrics=_METRICS.value, num_resamples=_RESAMPLES.value,
      seed=_SEED.value, level=_LEVEL.value)
  table = paired.markdown(comparison)
  print(table, end='')
  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    files.write_files({
        out.with_name(out.name + '.json'): files.encode_json(
            comparison.to_dict(), indent=1),
        out.with_name(out.name + '.md'): table.encode('utf-8')})


def main(argv):
  try:
    _compare(argv)
  except (files.DataError, ValueError) as e:
    print(f'compare: error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
