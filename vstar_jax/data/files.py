"""Strict JSON file access (gz or plain), JSON and .npy encoding, and
all-or-nothing file writes.

Every problem with a file surfaces as `DataError`, whose message is one line
that names the file (and, where the caller knows it, the offending key).
"""
import gzip
import io
import json
import os
import pathlib
import uuid
import zlib
from typing import Any, Mapping

import numpy as np

from vstar_jax.errors import DataError

PathLike = str | os.PathLike[str]


def read_bytes(path: PathLike) -> bytes:
  """Returns the content of `path`, gunzipped when the name ends in `.gz`."""
  path = pathlib.Path(path)
  try:
    if path.suffix == '.gz':
      with gzip.open(path, 'rb') as f:
        return f.read()
    return path.read_bytes()
  except FileNotFoundError as e:
    raise DataError(f'{path}: file not found') from e
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise DataError(f'{path}: corrupt gzip data ({e})') from e
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror or e})') from e


def read_text(path: PathLike) -> str:
  """Returns the UTF-8 text of `path` (gz or plain)."""
  data = read_bytes(path)
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not UTF-8 text at byte {e.start}') from e


def parse_json(text: str, *, source: PathLike, line: int | None = None) -> Any:
  """Parses JSON text; duplicate object keys are an error, not "last wins".

  Args:
    text: the JSON document.
    source: file named in error messages.
    line: line number for JSON-lines files, named in error messages.

  Returns:
    The decoded value.
  """
  where = f'{source}' if line is None else f'{source}: line {line}'

  def no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
      if key in obj:
        raise DataError(f'{where}: duplicate key {key!r}')
      obj[key] = value
    return obj

  try:
    return json.loads(text, object_pairs_hook=no_duplicates)
  except json.JSONDecodeError as e:
    raise DataError(f'{where}: malformed JSON at line {e.lineno} column '
                    f'{e.colno} (char {e.pos}): {e.msg}') from e


def read_json(path: PathLike) -> Any:
  """Reads a JSON file (gz or plain) with `parse_json`'s strictness."""
  return parse_json(read_text(path), source=path)


def read_json_object(path: PathLike) -> dict[str, Any]:
  """Reads a JSON file whose top-level value must be an object."""
  value = read_json(path)
  if not isinstance(value, dict):
    raise DataError(f'{path}: top-level value must be a JSON object, '
                    f'got {type(value).__name__}')
  return value


def find_file(data_dir: PathLike, filename: str) -> pathlib.Path | None:
  """Finds `filename` or `filename.gz` in data_dir; both present is an error."""
  plain = pathlib.Path(data_dir) / filename
  gz = plain.with_name(plain.name + '.gz')
  if plain.exists() and gz.exists():
    raise DataError(f'{plain}: both {plain.name} and {gz.name} exist; '
                    'remove one so the input is unambiguous')
  if gz.exists():
    return gz
  if plain.exists():
    return plain
  return None


def encode_json(obj: Any, *, gz: bool = False,
                indent: int | None = None) -> bytes:
  """UTF-8 JSON bytes of `obj`, gzipped if `gz`.

  Args:
    obj: a JSON-serialisable value.
    gz: gzip the bytes (mtime 0 and no file name in the header, so the same
      value gives the same bytes and regenerated files diff cleanly).
    indent: None for compact data files; an int pretty-prints for people,
      and then the text ends in a newline like any text file.

  Returns:
    The encoded bytes.
  """
  text = json.dumps(obj, ensure_ascii=False, indent=indent)
  if indent is not None:
    text += '\n'
  data = text.encode('utf-8')
  return gzip.compress(data, compresslevel=9, mtime=0) if gz else data


def encode_npy(array: np.ndarray) -> bytes:
  """The .npy file bytes of `array` (no pickled objects)."""
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  return buffer.getvalue()


def write_files(outputs: Mapping[PathLike, bytes]) -> None:
  """Writes files all or nothing; creates missing parent folders.

  Every content first goes to a temporary file beside its target; the
  temporaries are renamed over the targets only once all were written, so a
  failure leaves no partial output (and no temporary files).

  Args:
    outputs: target path -> file content.
  """
  staged = []
  try:
    for path, data in outputs.items():
      path = pathlib.Path(path)
      path.parent.mkdir(parents=True, exist_ok=True)
      # A fresh name opened with 'xb' (not mkstemp, whose mode is 0600) so
      # the file gets the usual umask-derived permissions.
      tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex}.tmp')
      staged.append((tmp, path))
      with open(tmp, 'xb') as f:
        f.write(data)
    for tmp, path in staged:
      os.replace(tmp, path)
  finally:
    for tmp, _ in staged:
      if os.path.exists(tmp):
        os.remove(tmp)


def write_json_files(outputs: Mapping[PathLike, Any]) -> None:
  """Writes compact JSON files with `write_files`; `.gz` names are gzipped.

  Args:
    outputs: target path -> JSON-serialisable value.
  """
  write_files({path: encode_json(obj, gz=pathlib.Path(path).suffix == '.gz')
               for path, obj in outputs.items()})


def write_json(path: PathLike, obj: Any) -> None:
  """Writes one compact JSON file atomically (gz when the name ends in .gz)."""
  write_json_files({path: obj})
