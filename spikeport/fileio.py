"""File helpers shared by every stage: atomic writes and readable path errors."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spikeport.errors import BadInput


def existing_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return `path` as a Path, or raise BadInput when it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{what} '{p}' does not exist" if not p.exists() else f"'{p}' is not a file")
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failure (or Ctrl-C) leaves neither a half-written file nor the temporary behind.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
