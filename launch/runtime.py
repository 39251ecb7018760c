"""What every vstar_jax binary does around its main function."""
import logging as py_logging
import sys
from typing import Callable

from absl import logging

from vstar_jax import experiment


class _DropThirdParty(py_logging.Filter):
  """Orbax logs every save/restore step at INFO; keep warnings only."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or (
        '/orbax/' not in record.pathname)


def run_main(name: str, fn: Callable[[], None]) -> None:
  """Runs fn; input errors become one line on stderr and exit code 1."""
  logging.get_absl_handler().addFilter(_DropThirdParty())
  try:
    fn()
  except experiment.errors_to_catch() as e:
    print(f'{name}: error: {e}', file=sys.stderr)
    sys.exit(1)
