"""All-or-nothing file writes: temp files beside the targets, then
os.replace, so an error never leaves a half-written output."""
import os
import pathlib
import tempfile


def write_files_atomically(files: dict[str | os.PathLike, bytes]) -> None:
  """Writes every file or, on error, none of the new contents.

  All contents go to temp files first; only when every temp file is complete
  are they renamed over the targets.

  Args:
    files: target path -> bytes. Parent folders are created.
  """
  temps = []
  try:
    for path, data in files.items():
      path = pathlib.Path(path)
      path.parent.mkdir(parents=True, exist_ok=True)
      fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
      temps.append((temp, path))
      with os.fdopen(fd, 'wb') as f:
        f.write(data)
    for temp, path in temps:
      os.replace(temp, path)
  finally:
    for temp, _ in temps:
      if os.path.exists(temp):
        os.remove(temp)
