"""Exception types of the SID package.

Each error's str is one line naming the offending input, so binaries can print
it as is and exit 1 without a traceback. They are `DataError`s, the project's
one bad-input error type; index files are read by `vstar_jax.data.sid_index`.
"""
from vstar_jax.errors import DataError


class SidError(DataError):
  """Base class: bad SID input or an impossible SID request."""


class EmbeddingsError(SidError):
  """Item embeddings have the wrong rank, dtype or non-finite values."""


class CodesError(SidError):
  """SID codes of the wrong rank or dtype, or negative codes."""


class CollisionError(SidError):
  """Colliding SIDs that the chosen resolution method cannot separate."""


class TrieError(SidError):
  """Codes that cannot form a prefix trie (duplicate SIDs, code >= V)."""


class DeadPrefixError(SidError):
  """A prefix that has no valid continuation in the trie."""
