"""The two bad-input error types of vstar_jax.

Each error's str is one line naming the offending file, key or config field,
so a binary prints it as is and exits 1 without a traceback. Every other
bad-input error in the package (sid, text, checkpoints) subclasses one of
these. This module imports nothing from vstar_jax, so any module can raise
them without an import cycle.
"""


class DataError(ValueError):
  """Bad or missing input data. str(error) is one line naming file and key."""

  def __init__(self, message: str):
    # One line by contract: binaries print it as their whole error report.
    super().__init__(str(message).replace('\r', ' ').replace('\n', ' '))


class ConfigError(ValueError):
  """A config value or flag that cannot work; str(error) is one line."""

  def __init__(self, message: str):
    super().__init__(str(message).replace('\r', ' ').replace('\n', ' '))


# What the binaries report in one line (no traceback) and exit 1 on.
INPUT_ERRORS = (DataError, ConfigError)
