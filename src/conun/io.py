"""Atomic file writes: a reader never sees a half-written checkpoint or results file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
"""Every run directory's results file. Named here, at the bottom of the layers: the evaluation
writes it and :mod:`conun.viz`, which never imports the evaluation, reads it."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file through ``write(tmp_path)`` into a temporary sibling, then rename it.

    The rename is atomic on POSIX file systems, so ``path`` holds either its old content or the
    complete new content, also when the process is killed mid-write.

    Args:
        path: destination.
        write: called with a temporary path in the same directory; must create that file.

    Returns:
        ``path`` as a ``Path``.
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as written:
            os.fsync(written.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would (0666
        # minus the umask) so results and reports can be shared like any other file.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, destination)
    finally:
        tmp_path.unlink(missing_ok=True)
    return destination


def _current_umask() -> int:
    """The process umask (reading it requires setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON to ``path``."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
