"""Atomic file writes: a reader never sees a half-written checkpoint or results file."""

from __future__ import annotations

import hashlib
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


class OutputPathError(ValueError):
    """An output path that cannot be created or written (found before any work)."""


_NAME_MAX = 255
"""Bytes in one file name on Linux, macOS and Windows file systems alike."""
_PATH_MAX = 4096
"""Bytes in a whole path on Linux."""
_LONGEST_CHILD = 64
"""Room kept for the longest name a run writes inside its directory (``.resume.safetensors.
<random>.tmp``, a bench cell's ``cells/<seed>/<request>/<method>/...``)."""


def check_output_path(path: str | Path, *, flag: str = "--out", directory: bool = True) -> Path:
    """Check, before any work, that ``path`` can be created and written.

    Every name in it fits the file system's limit, the whole path leaves room for the files a
    run writes inside it, nothing on the way is a file, and the deepest existing folder is
    writable. Nothing is created.

    Args:
        path: the output directory (``directory``) or file path to check.
        flag: the option that named it, for the message.
        directory: ``path`` is a directory a run writes into (else a file, whose parent is).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OutputPathError: one line naming ``flag``, the path and what is wrong.
    """
    target = Path(path)
    for part in target.parts:
        size = len(os.fsencode(part))
        if size > _NAME_MAX:
            raise OutputPathError(
                f"{flag} {_shorten(str(target))}: the name {_shorten(part)} is {size} bytes long; "
                f"file names are at most {_NAME_MAX} bytes"
            )
    full = len(os.fsencode(os.path.abspath(target)))
    if full + (_LONGEST_CHILD if directory else 0) > _PATH_MAX:
        raise OutputPathError(
            f"{flag} {_shorten(str(target))}: the path is {full} bytes long; at most "
            f"{_PATH_MAX - _LONGEST_CHILD} are allowed (room for the files written inside it)"
        )
    if os.path.lexists(target) and directory and not target.is_dir():
        raise OutputPathError(f"{flag} {target} exists and is not a directory")
    existing = target if directory else target.parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    absolute = Path(os.path.abspath(existing))
    if not absolute.is_dir():
        raise OutputPathError(
            f"{flag} {target}: {existing} is a file, not a directory, so nothing can be created "
            "under it"
        )
    if not os.access(absolute, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {target}: {existing} is not writable")
    return target


def _shorten(text: str, keep: int = 40) -> str:
    """``text`` cut to ``keep`` characters (with the total length) for one-line messages."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def remove_stale_temporaries(directory: str | Path, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary siblings (``.<name>.<random>.tmp``) that :func:`atomic_write` left
    in ``directory`` when a process was killed between creating and renaming them.

    Called at the start of a run in that directory, before any writer of this run exists; no
    file a reader could want is touched (a temporary is never the content of a finished write).

    Args:
        directory: the run directory.
        recursive: also every folder below it (a bench directory's cells and originals).

    Returns:
        The paths removed (empty when ``directory`` does not exist).
    """
    folder = Path(directory)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        if candidate.is_file() and not candidate.is_symlink():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    """The SHA-256 of ``data`` as canonical JSON (sorted keys, no spaces), as 64 hex digits."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON to ``path``."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
