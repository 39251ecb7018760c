"""What every vstar_jax binary does around its main function."""
import importlib.util
import logging as py_logging
import os
import re
import sys
from typing import Any, Callable, Optional

from absl import logging
import jax
import ml_collections

from vstar_jax import config as config_lib
from vstar_jax import errors


class _DropThirdParty(py_logging.Filter):
  """Orbax logs every save/restore step at INFO; keep warnings only."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or (
        '/orbax/' not in record.pathname)


def run_main(name: str, fn: Callable[[], Any]) -> Any:
  """Returns fn(); input errors become one line on stderr and exit code 1."""
  logging.get_absl_handler().addFilter(_DropThirdParty())
  try:
    return fn()
  except errors.INPUT_ERRORS as e:
    print(f'{name}: error: {e}', file=sys.stderr)
    sys.exit(1)


def init_distributed(detect: bool, *, coordinator_address: Optional[str],
                     num_processes: Optional[int],
                     process_id: Optional[int]) -> None:
  """jax.distributed.initialize() when this is one of several processes.

  Explicit flags win; `detect` (or JAX_COORDINATOR_ADDRESS in the
  environment) lets JAX read the rest from the cluster. Must run before any
  other JAX call touches the devices.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if all(v is None for v in explicit) and not (
      detect or os.environ.get('JAX_COORDINATOR_ADDRESS')):
    return
  if num_processes == 1:
    return
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
  logging.info('Process %d of %d; %d local / %d global devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def flag_error(argv: list[str], error: Exception) -> str:
  """One line for a flag that failed to parse (e.g. an unknown field)."""
  text = str(error)
  if 'Error whilst parsing config file' in text:
    # ml_collections puts get_config's whole traceback in the message; its
    # last line is the error itself.
    lines = text.strip().splitlines()
    return f'{text.split(": Error whilst", 1)[0]}: {lines[-1].strip()}'
  if isinstance(error, (AttributeError, KeyError)):
    # ml_collections: "'batchsize'\nDid you mean "batch_size" instead ..."
    key = re.match(r"\W*(\w+)", text)
    hint = re.search(r'Did you mean "(\w+)"', text)
    for arg in argv:
      path = arg[2:].split('=', 1)[0]
      parts = path.split('.')
      if arg.startswith('--config.') and key and key.group(1) in parts:
        message = f'{path}: unknown config field'
        if hint:
          parts[parts.index(key.group(1))] = hint.group(1)
          message += f'; did you mean {".".join(parts)}?'
        return message
  return ' '.join(text.split())


def parse_config_flag(value: Any) -> config_lib.RunConfig:
  """vstar_jax.config.parse of a --config flag's value.

  ml_collections defers a config file that cannot be read (missing, or an
  IOError inside) to the first use of the value; that becomes one ConfigError
  naming the file here.
  """
  if not isinstance(value, ml_collections.ConfigDict):
    try:
      value.seed        # an _ErrorConfig raises its load error
    except OSError as e:     # its last line names the file and the error
      cause = str(e.__cause__ or e).strip().splitlines()[-1].strip()
      raise errors.ConfigError(f'--config: {cause}') from e
  return config_lib.parse(value)


def load_config_file(spec: str) -> config_lib.RunConfig:
  """A config file given like --config (PATH.py[:ARG]), parsed and checked.

  Raises:
    ConfigError: no such file, or get_config fails or returns a bad config.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.ConfigError(f'{path}: config file not found')
  module_spec = importlib.util.spec_from_file_location(
      f'_config_{os.path.basename(path)[:-3]}', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except (AttributeError, ImportError, SyntaxError, TypeError,
          ValueError) as e:
    raise errors.ConfigError(f'{spec}: {" ".join(str(e).split())}') from e
  return config_lib.parse(config)
