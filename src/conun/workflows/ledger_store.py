"""The ledger's database: deletion requests and model versions in one SQLite file.

SQLite through the standard library's ``sqlite3``, in WAL mode, so that readers (``status``,
``verify``) never block the writers and several processes may add requests at once: each
insertion is one ``BEGIN IMMEDIATE`` transaction, in which the checks against earlier requests
and the insertion see the same state (no request lost, none duplicated, no sample requested
twice). The schema carries its version in ``PRAGMA user_version``; an older ledger is migrated
when opened, a newer one is refused.

``apply`` is serialised by an exclusive ``fcntl`` lock on ``apply.lock`` (released by the kernel
when the process dies, so a killed apply never leaves a stale lock), and publishes a version by
renaming its finished directory into place and committing its row in one transaction.

This module knows nothing of models: it stores and checks rows; :mod:`conun.workflows.ledger`
runs the unlearning.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conun.data.splits import ForgetRequestError

SCHEMA_VERSION = 1
"""The schema this code writes; ``PRAGMA user_version`` of every ledger database."""

DATABASE_FILE = "ledger.sqlite3"
LOCK_FILE = "apply.lock"
IDS_DIR = "ids"
VERSIONS_DIR = "versions"
STAGING_DIR = "staging"

RequestKind = Literal["class", "samples"]
RequestStatus = Literal["pending", "applied", "failed"]

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE versions (
    number INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES versions(number),
    created_at TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    checkpoint_sha256 TEXT NOT NULL,
    method TEXT NOT NULL,
    config TEXT NOT NULL,
    results TEXT NOT NULL,
    seconds REAL NOT NULL,
    certificate TEXT,
    certificate_sha256 TEXT
);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('class', 'samples')),
    classes TEXT NOT NULL,
    ids_file TEXT,
    num_samples INTEGER,
    ids_sha256 TEXT NOT NULL,
    reference TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'failed')),
    version INTEGER REFERENCES versions(number),
    error TEXT
);
CREATE INDEX requests_by_status ON requests (status);
-- One row per sample of every sample request that is not failed: the primary key is what
-- makes "no sample requested twice" hold under concurrent insertions.
CREATE TABLE request_samples (
    sample INTEGER PRIMARY KEY,
    request INTEGER NOT NULL REFERENCES requests(id)
);
CREATE INDEX request_samples_by_request ON request_samples (request);
"""

_MIGRATIONS: dict[int, str] = {}
"""``from_version -> SQL`` bringing a ledger one schema version up (none yet: version 1)."""


class LedgerError(ValueError):
    """A ledger that is missing, damaged, or cannot do what was asked; the message says why."""


class LedgerBusyError(LedgerError):
    """Another process is applying requests to the same ledger."""


@dataclass(frozen=True)
class RequestRow:
    """One deletion request.

    Attributes:
        id: its number in the ledger (1, 2, ...), in order of arrival.
        received_at: ISO 8601 UTC time of its recording.
        kind: ``"class"`` (every training sample of ``classes``) or ``"samples"`` (the ids).
        classes: the classes of a class request, else ``()``.
        ids_file: a sample request's ids as the ledger stores them (relative path), else None.
        num_samples: how many ids a sample request names, else None.
        ids_sha256: SHA-256 of the canonical ids file (sample request) or of the canonical
            ``{"classes": [...]}`` JSON (class request).
        reference: the requester's free text (a ticket number), or None.
        status: ``pending``, ``applied`` or ``failed``.
        version: the model version that honours it, once applied.
        error: why it failed, for a failed request.
    """

    id: int
    received_at: str
    kind: RequestKind
    classes: tuple[int, ...]
    ids_file: str | None
    num_samples: int | None
    ids_sha256: str
    reference: str | None
    status: RequestStatus
    version: int | None
    error: str | None

    def describe(self) -> str:
        """``class 3`` or ``100 samples``."""
        if self.kind == "class":
            return "class " + ", ".join(str(c) for c in self.classes)
        return f"{self.num_samples} samples"


@dataclass(frozen=True)
class VersionRow:
    """One model version; version 0 is the original.

    Attributes:
        number: 0, 1, 2, ...
        parent: the version it was unlearned from (None for 0).
        created_at: ISO 8601 UTC time.
        checkpoint: its checkpoint, relative to the ledger directory.
        checkpoint_sha256: SHA-256 of that file.
        method: ``"original"`` or the unlearning method.
        config: the resolved UnlearnConfig (JSON), empty for version 0.
        results: the run's results row (accuracies, passes, ...), empty for version 0.
        seconds: wall-clock of the method (training time for version 0).
        certificate: its certificate.json, relative to the ledger directory (None for 0).
        certificate_sha256: SHA-256 of that file.
        requests: the ids of the requests it honours.
    """

    number: int
    parent: int | None
    created_at: str
    checkpoint: str
    checkpoint_sha256: str
    method: str
    config: dict[str, Any]
    results: dict[str, Any]
    seconds: float
    certificate: str | None = None
    certificate_sha256: str | None = None
    requests: tuple[int, ...] = ()


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_ids(ids: Sequence[int]) -> bytes:
    """The bytes of a stored ids file: the sorted ids as a compact JSON list and a newline."""
    return (json.dumps(sorted(int(i) for i in ids), separators=(",", ":")) + "\n").encode()


def canonical_classes(classes: Sequence[int]) -> bytes:
    """The bytes a class request's SHA-256 is computed over."""
    return json.dumps({"classes": sorted(int(c) for c in classes)}).encode()


def database_path(ledger: str | Path) -> Path:
    """Where the database of the ledger directory ``ledger`` lives."""
    return Path(ledger) / DATABASE_FILE


def _open(path: Path, *, create: bool) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit.
    # mode=rw never creates a file: opening a missing ledger is an error, not an empty ledger.
    mode = "rwc" if create else "rw"
    connection = sqlite3.connect(
        f"file:{path}?mode={mode}", uri=True, timeout=60.0, isolation_level=None
    )
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 60000")
    connection.execute("PRAGMA synchronous = FULL")  # a committed request survives a power cut
    return connection


def create_database(path: Path, meta: Mapping[str, str], original: VersionRow) -> None:
    """Write a new ledger database at ``path`` holding ``meta`` and version 0.

    Built under a temporary name and renamed into place: a ledger's database is complete or
    absent.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    connection = _open(tmp, create=True)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # executescript commits any open transaction first: the schema goes in on its own (the
        # file is not the ledger's until the rename below anyway).
        connection.executescript(_SCHEMA)
        with transaction(connection):
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items())
            )
            insert_version(connection, original)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        connection.close()
    os.replace(tmp, path)


def connect(ledger: str | Path) -> sqlite3.Connection:
    """Open the database of the ledger directory ``ledger``, migrating an older schema.

    Raises:
        LedgerError: no ledger there, not a conun ledger, or one written by a newer conun.
    """
    path = database_path(ledger)
    if not path.is_file():
        raise LedgerError(
            f"no ledger at {ledger}: create one with `conun ledger init {ledger} --checkpoint RUN`"
        )
    try:
        connection = _open(path, create=False)
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as error:
        raise LedgerError(f"{path} is not a readable ledger database: {error}") from None
    if version == 0:
        connection.close()
        raise LedgerError(f"{path} is not a conun ledger (no schema version)")
    if version > SCHEMA_VERSION:
        connection.close()
        raise LedgerError(
            f"{path} has ledger schema {version}, newer than this conun's {SCHEMA_VERSION}: "
            "upgrade conun to use it"
        )
    while version < SCHEMA_VERSION:  # one script per step, each its own transaction
        connection.executescript(
            f"BEGIN IMMEDIATE; {_MIGRATIONS[version]}; PRAGMA user_version = {version + 1}; COMMIT;"
        )
        version += 1
    return connection


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any error.

    IMMEDIATE takes the database's write lock at the start (waiting up to the busy timeout for
    another writer), so that what the transaction reads cannot change before it writes.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    """The ledger's fixed facts (dataset, model, sizes, data fingerprint, ...)."""
    return {row["key"]: row["value"] for row in connection.execute("SELECT key, value FROM meta")}


def _request(row: sqlite3.Row) -> RequestRow:
    return RequestRow(
        id=int(row["id"]),
        received_at=row["received_at"],
        kind=row["kind"],
        classes=tuple(json.loads(row["classes"])),
        ids_file=row["ids_file"],
        num_samples=row["num_samples"],
        ids_sha256=row["ids_sha256"],
        reference=row["reference"],
        status=row["status"],
        version=row["version"],
        error=row["error"],
    )


def list_requests(
    connection: sqlite3.Connection, *, status: RequestStatus | None = None
) -> list[RequestRow]:
    """Every request (or those of ``status``), in order of arrival."""
    if status is None:
        rows = connection.execute("SELECT * FROM requests ORDER BY id")
    else:
        rows = connection.execute("SELECT * FROM requests WHERE status = ? ORDER BY id", (status,))
    return [_request(row) for row in rows]


def request_samples(connection: sqlite3.Connection, request: int) -> list[int]:
    """The sorted sample ids of sample request ``request``."""
    rows = connection.execute(
        "SELECT sample FROM request_samples WHERE request = ? ORDER BY sample", (request,)
    )
    return [int(row[0]) for row in rows]


def list_versions(connection: sqlite3.Connection) -> list[VersionRow]:
    """Every model version, oldest first."""
    honoured: dict[int, list[int]] = {}
    for row in connection.execute(
        "SELECT id, version FROM requests WHERE version IS NOT NULL ORDER BY id"
    ):
        honoured.setdefault(int(row["version"]), []).append(int(row["id"]))
    return [
        VersionRow(
            number=int(row["number"]),
            parent=row["parent"],
            created_at=row["created_at"],
            checkpoint=row["checkpoint"],
            checkpoint_sha256=row["checkpoint_sha256"],
            method=row["method"],
            config=json.loads(row["config"]),
            results=json.loads(row["results"]),
            seconds=float(row["seconds"]),
            certificate=row["certificate"],
            certificate_sha256=row["certificate_sha256"],
            requests=tuple(honoured.get(int(row["number"]), ())),
        )
        for row in connection.execute("SELECT * FROM versions ORDER BY number")
    ]


def insert_version(connection: sqlite3.Connection, version: VersionRow) -> None:
    """Add ``version`` and mark its requests applied (inside the caller's transaction).

    Raises:
        LedgerError: one of its requests is no longer pending (nothing is changed).
    """
    connection.execute(
        "INSERT INTO versions (number, parent, created_at, checkpoint, checkpoint_sha256, method, "
        "config, results, seconds, certificate, certificate_sha256) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            version.number,
            version.parent,
            version.created_at,
            version.checkpoint,
            version.checkpoint_sha256,
            version.method,
            json.dumps(version.config),
            json.dumps(version.results),
            version.seconds,
            version.certificate,
            version.certificate_sha256,
        ),
    )
    for request in version.requests:
        updated = connection.execute(
            "UPDATE requests SET status = 'applied', version = ? WHERE id = ? AND status = "
            "'pending'",
            (version.number, request),
        ).rowcount
        if updated != 1:
            raise LedgerError(f"request {request} is no longer pending; nothing was recorded")


def insert_request(
    connection: sqlite3.Connection,
    *,
    kind: RequestKind,
    classes: Sequence[int],
    ids: Sequence[int],
    ids_file: str | None,
    ids_sha256: str,
    reference: str | None,
    num_classes: int,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Record a pending request after checking it against every earlier one, atomically.

    Args:
        kind: ``class`` or ``samples``.
        classes: a class request's classes (already range-checked).
        ids: a sample request's ids (already checked against the training set).
        ids_file: where the ledger stored the ids (relative path), for a sample request.
        ids_sha256: see :class:`RequestRow`.
        reference: the requester's free text.
        num_classes: C, so that at least one class is always retained.
        before_commit: called once the request is checked, before it is committed (the
            ledger writes the ids file there, so that a refused request writes nothing).

    Returns:
        The new request's id.

    Raises:
        ForgetRequestError: a class already requested or forgotten, ids already requested
            (the same set, or some of them), or nothing left to retain; nothing is written.
    """
    with transaction(connection):
        active = [r for r in list_requests(connection) if r.status != "failed"]
        same = next((r for r in active if r.ids_sha256 == ids_sha256), None)
        if same is not None and kind == "samples":  # a class's own message follows
            raise ForgetRequestError(
                f"these ids were already requested: request {same.id} ({same.describe()}, "
                f"{same.status}) has the same SHA-256 {ids_sha256[:16]}..."
            )
        if kind == "class":
            taken = {c: r for r in active for c in r.classes}
            repeated = sorted(set(classes) & set(taken))
            if repeated:
                first = taken[repeated[0]]
                state = "forgotten" if first.status == "applied" else "requested"
                raise ForgetRequestError(
                    f"class {repeated} is already {state} (request {first.id}, {first.status})"
                )
            if len(taken) + len(classes) >= num_classes:
                raise ForgetRequestError(
                    f"cannot forget all {num_classes} classes: nothing would be retained"
                )
        else:
            overlap = _requested_among(connection, ids)
            if overlap:
                shown = ", ".join(f"{s} (request {r})" for s, r in overlap[:10])
                raise ForgetRequestError(
                    f"{len(overlap)} of these ids were already requested: {shown}"
                )
        cursor = connection.execute(
            "INSERT INTO requests (received_at, kind, classes, ids_file, num_samples, ids_sha256, "
            "reference, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
            (
                now(),
                kind,
                json.dumps(sorted(int(c) for c in classes)),
                ids_file,
                len(ids) if kind == "samples" else None,
                ids_sha256,
                reference,
            ),
        )
        request = cursor.lastrowid
        assert request is not None
        connection.executemany(
            "INSERT INTO request_samples (sample, request) VALUES (?, ?)",
            ((int(i), request) for i in ids),
        )
        if before_commit is not None:
            before_commit()
    return int(request)


def _requested_among(connection: sqlite3.Connection, ids: Sequence[int]) -> list[tuple[int, int]]:
    """``(sample, request)`` of the ``ids`` that an active request already names."""
    found: list[tuple[int, int]] = []
    for start in range(0, len(ids), 500):  # SQLite bounds the parameters of one statement
        chunk = [int(i) for i in ids[start : start + 500]]
        marks = ",".join("?" * len(chunk))
        found += [
            (int(row[0]), int(row[1]))
            for row in connection.execute(
                f"SELECT sample, request FROM request_samples WHERE sample IN ({marks})", chunk
            )
        ]
    return sorted(found)


def mark_failed(connection: sqlite3.Connection, requests: Sequence[int], error: str) -> None:
    """Mark pending ``requests`` failed with ``error``; their samples may be requested again."""
    with transaction(connection):
        for request in requests:
            connection.execute(
                "UPDATE requests SET status = 'failed', error = ? WHERE id = ? AND status = "
                "'pending'",
                (error, request),
            )
            connection.execute("DELETE FROM request_samples WHERE request = ?", (request,))


@contextlib.contextmanager
def apply_lock(ledger: str | Path) -> Iterator[None]:
    """Hold the ledger's apply lock, or refuse at once when another process holds it.

    An exclusive ``flock`` on ``apply.lock``: the kernel releases it when the holder exits,
    however it exits, so a killed apply never blocks the next one. The holder writes its pid
    and start time into the file, for the refusal's message.

    Raises:
        LedgerBusyError: another apply is running on this ledger.
    """
    path = Path(ledger) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(encoding="utf-8").strip() or "another process"
            raise LedgerBusyError(
                f"another `conun ledger apply` is running on {ledger} ({holder}); wait for it to "
                "finish: requests recorded meanwhile stay pending for the next apply"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()}, started {now()}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class LedgerStatus:
    """What ``status`` shows: the ledger's facts, every request and every version."""

    meta: dict[str, str]
    requests: list[RequestRow]
    versions: list[VersionRow]

    def format(self) -> str:
        """Two plain-text tables: the requests, then the versions."""
        request_rows = [
            (
                str(r.id),
                r.received_at[:19],
                r.describe(),
                r.reference or "",
                r.status,
                "" if r.version is None else str(r.version),
                r.error or "",
            )
            for r in self.requests
        ]
        version_rows = [
            (
                str(v.number),
                "" if v.parent is None else str(v.parent),
                v.created_at[:19],
                v.method,
                ",".join(map(str, v.requests)),
                percent(v.results.get("metrics", {}).get("test_acc")),
                f"{v.seconds:.2f}",
                v.checkpoint_sha256[:16],
            )
            for v in self.versions
        ]
        head = (
            f"ledger of a {self.meta['model']} on {self.meta['dataset']}: "
            f"{len(self.requests)} requests "
            f"({sum(r.status == 'pending' for r in self.requests)} pending), "
            f"{len(self.versions)} versions"
        )
        return "\n\n".join(
            [
                head,
                text_table(
                    (
                        "request",
                        "received (UTC)",
                        "what",
                        "reference",
                        "status",
                        "version",
                        "error",
                    ),
                    request_rows,
                ),
                text_table(
                    (
                        "version",
                        "parent",
                        "created (UTC)",
                        "method",
                        "requests",
                        "test %",
                        "seconds",
                        "checkpoint sha256",
                    ),
                    version_rows,
                ),
            ]
        )


def percent(value: Any) -> str:
    """A fraction as a percentage with two decimals; empty for None."""
    return "" if value is None else f"{100 * float(value):.2f}"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned plain-text columns under a dashed rule."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [header, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


__all__ = [
    "DATABASE_FILE",
    "IDS_DIR",
    "LOCK_FILE",
    "SCHEMA_VERSION",
    "STAGING_DIR",
    "VERSIONS_DIR",
    "LedgerBusyError",
    "LedgerError",
    "LedgerStatus",
    "RequestKind",
    "RequestRow",
    "RequestStatus",
    "VersionRow",
    "apply_lock",
    "canonical_classes",
    "canonical_ids",
    "connect",
    "create_database",
    "database_path",
    "insert_request",
    "insert_version",
    "list_requests",
    "list_versions",
    "mark_failed",
    "now",
    "percent",
    "request_samples",
    "sha256_file",
    "text_table",
    "transaction",
]
