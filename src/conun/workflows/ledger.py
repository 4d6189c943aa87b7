"""Deletion requests as a lifecycle: a ledger records requests as they arrive, applies them in
sequence, and certifies every model version it writes.

A ledger is a directory::

    LEDGER/
      ledger.sqlite3            requests, versions and the ledger's facts (ledger_store)
      apply.lock                held by a running apply
      ids/<sha256>.json         each sample request's ids, canonical JSON, named by its SHA-256
      versions/0/               the original checkpoint (a copy)
      versions/N/               checkpoint.safetensors, certificate.json and .html, results.json,
                                results.md, config.yaml of version N
      staging/                  a running apply's version before it is published

Version N+1 is unlearned from version N, with the retain set = the training data minus the
validation split minus everything forgotten by this and every earlier version: the samples
forgotten earlier are taken out of the training data the method sees, so that no method ever
retains (or trains on) them again.

An apply is atomic: the version's files are written into ``staging/``, then renamed into
``versions/N`` and its row committed (and its requests marked applied) in one transaction. A
crash or kill before the commit leaves the requests pending and no version row; the directory a
kill may leave behind is removed by the next apply before it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from conun.config import TrainConfig, UnlearnConfig, config_to_yaml
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRequestError, ForgetRetainSplit, read_ids_file
from conun.engine.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointMeta,
    read_checkpoint_meta,
    resolve_checkpoint_path,
    save_checkpoint,
)
from conun.evaluation.results import Results, RunRecord
from conun.io import atomic_write, atomic_write_json, atomic_write_text
from conun.reproducibility import versions as library_versions
from conun.version import __version__
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.evaluation import audit_against
from conun.workflows.inputs import ensure_dataset, load_checkpoint_for, load_training_data
from conun.workflows.ledger_certificate import (
    CERTIFICATE_FILE,
    CERTIFICATE_HTML,
    FORMAT,
    VerifyReport,
    audit_numbers,
    certificate_html,
    compare,
    expect,
    expect_hash,
    measure,
    read_json,
    validate_certificate,
)
from conun.workflows.ledger_plan import (
    build_plan,
    data_fingerprint,
    request_entry,
    scenario_of,
    union,
)
from conun.workflows.ledger_reforget import (
    certified_levels,
    keep_classes_forgotten,
    reforget_config,
)
from conun.workflows.ledger_store import (
    IDS_DIR,
    STAGING_DIR,
    VERSIONS_DIR,
    LedgerError,
    LedgerStatus,
    RequestRow,
    VersionRow,
    apply_lock,
    canonical_classes,
    canonical_ids,
    connect,
    create_database,
    database_path,
    insert_request,
    insert_version,
    list_requests,
    list_versions,
    mark_failed,
    now,
    request_samples,
    sha256_file,
    transaction,
)
from conun.workflows.outputs import CONFIG_FILE
from conun.workflows.unlearning import run_method

LEDGER_FORMAT = "conun-ledger/1"

logger = logging.getLogger(__name__)
DEFAULT_TOLERANCE = 0.002
"""Largest difference ``verify`` accepts between a recorded and a recomputed accuracy: a
borderline prediction may flip under another CPU's kernels; a changed model is caught by its
hash, not by this."""


class Ledger:
    """A ledger of deletion requests and the model versions that honour them.

    ``Ledger.init(path, checkpoint=...)`` creates one; ``Ledger(path)`` opens it.

    Raises:
        LedgerError: ``path`` holds no ledger (or a newer conun's).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        connect(self.path).close()  # a missing or foreign ledger fails here
        self._data: DatasetBundle | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, *, checkpoint: str | Path) -> Ledger:
        """Create a ledger at ``path`` (a new or empty directory) whose version 0 is a copy of
        ``checkpoint`` (a file or a run directory).

        Raises:
            LedgerError: ``path`` already holds a ledger or other files.
            CheckpointError: ``checkpoint`` is not a readable conun checkpoint for its data.
        """
        target = Path(path)
        if database_path(target).exists():
            raise LedgerError(f"{target} already holds a ledger")
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise LedgerError(f"{target} exists and is not an empty directory")
        source = resolve_checkpoint_path(checkpoint)
        meta = read_checkpoint_meta(source)
        train_config = TrainConfig.model_validate(meta.train_config)
        ensure_dataset(train_config)
        data = load_training_data(train_config)
        load_checkpoint_for(source, data)  # it must fit the data it claims
        created = not target.exists()
        try:
            original = target / VERSIONS_DIR / "0" / CHECKPOINT_FILE

            def copy(tmp: Path) -> None:
                shutil.copyfile(source, tmp)

            atomic_write(original, copy)
            facts = {
                "format": LEDGER_FORMAT,
                "created_at": now(),
                "conun_version": __version__,
                "source_checkpoint": str(source.resolve()),
                "dataset": meta.dataset,
                "model": meta.model,
                "num_classes": str(meta.num_classes),
                "num_train": str(len(data.train)),
                "num_validation": str(len(meta.validation)),
                "data_sha256": data_fingerprint(data),
            }
            row = VersionRow(
                number=0,
                parent=None,
                created_at=now(),
                checkpoint=original.relative_to(target).as_posix(),
                checkpoint_sha256=sha256_file(original),
                method=meta.method,
                config={},
                results={"metrics": meta.metrics or {}},
                seconds=meta.seconds,
            )
            create_database(database_path(target), facts, row)
        except BaseException:
            shutil.rmtree(target if created else target / VERSIONS_DIR, ignore_errors=True)
            raise
        return cls(target)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = connect(self.path)
        try:
            yield connection
        finally:
            connection.close()

    def _facts(self, connection: sqlite3.Connection) -> dict[str, str]:
        return {
            row["key"]: row["value"] for row in connection.execute("SELECT key, value FROM meta")
        }

    def _original(self) -> CheckpointMeta:
        return read_checkpoint_meta(self.path / VERSIONS_DIR / "0" / CHECKPOINT_FILE)

    def _validation(self) -> Tensor:
        """``(Nv,)`` the original's validation split: never trained on, never forgotten."""
        return torch.tensor(self._original().validation, dtype=torch.long)

    # -- requests -------------------------------------------------------------------------------

    def request(
        self,
        *,
        classes: Sequence[int] = (),
        ids: Sequence[int] | None = None,
        ids_file: str | Path | None = None,
        reference: str | None = None,
    ) -> int:
        """Record a pending deletion request and return its id.

        Give exactly one of ``classes`` (forget every training sample of these classes),
        ``ids`` or ``ids_file`` (training-set indices: a JSON list or one per line). Safe from
        several processes at once. No data is loaded: the ids are checked against the sizes
        and the validation split recorded at ``init``.

        Raises:
            ForgetRequestError: not exactly one kind given, a class out of range or already
                requested, ids out of range, duplicated, in the validation split or already
                requested, or nothing left to retain. Nothing is written.
        """
        given = sum([bool(classes), ids is not None, ids_file is not None])
        if given != 1:
            raise ForgetRequestError("give exactly one of --forget-class C or --forget-ids FILE")
        with self._connect() as connection:
            facts = self._facts(connection)
            num_classes, num_train = int(facts["num_classes"]), int(facts["num_train"])
            if classes:
                wanted = sorted({int(c) for c in classes})
                bad = [c for c in wanted if not 0 <= c < num_classes]
                if bad:
                    raise ForgetRequestError(
                        f"forget class {bad} is not in the data: classes are 0..{num_classes - 1}"
                    )
                return insert_request(
                    connection,
                    kind="class",
                    classes=wanted,
                    ids=(),
                    ids_file=None,
                    ids_sha256=hashlib.sha256(canonical_classes(wanted)).hexdigest(),
                    reference=reference,
                    num_classes=num_classes,
                )
            values = list(ids) if ids is not None else read_ids_file(str(ids_file))
            chosen = self._checked_ids(values, num_train)
            content = canonical_ids(chosen)
            digest = hashlib.sha256(content).hexdigest()
            stored = Path(IDS_DIR) / f"{digest}.json"

            def write_ids() -> None:
                def write(tmp: Path) -> None:
                    tmp.write_bytes(content)

                atomic_write(self.path / stored, write)

            return insert_request(
                connection,
                kind="samples",
                classes=(),
                ids=chosen,
                ids_file=stored.as_posix(),
                ids_sha256=digest,
                reference=reference,
                num_classes=num_classes,
                before_commit=write_ids,
            )

    def _checked_ids(self, values: Sequence[int], num_train: int) -> list[int]:
        """``values`` sorted, after the checks :meth:`ForgetRetainSplit.from_ids` makes."""
        validation = torch.tensor(self._original().validation, dtype=torch.long)
        split = ForgetRetainSplit.from_ids(values, num_train, validation=validation)
        return [int(i) for i in split.forget.tolist()]

    # -- apply ----------------------------------------------------------------------------------

    def apply(
        self,
        method: str | None = None,
        *,
        layers: Sequence[tuple[str, Mapping[str, Any] | None]] = (),
        overrides: Sequence[str] = (),
        audit: bool = False,
        quiet: bool = True,
    ) -> list[VersionRow]:
        """Unlearn every pending request from the latest version; return the new versions.

        Pending class requests are applied together in one version, pending sample requests
        together in the next (each kind has its own stopping rule). Refused at once while
        another apply runs on the ledger.

        Args:
            method: a registered method (default: ``method`` of the layers, else contrastive).
            layers: ``(label, mapping)`` config layers over the method's and the dataset's
                defaults (a ``--config`` file's content, an API call's settings).
            overrides: ``key.sub=value`` overrides, applied last.
            audit: add the membership attacks to the certificates.
            quiet: no progress bars.

        Returns:
            The versions written, oldest first (empty when nothing was pending).

        Raises:
            LedgerBusyError: another apply is running.
            ConfigError, UnsupportedScenarioError: a bad method, option or override, before
                any work.
            ForgetRequestError: a request cannot be honoured (it is then marked failed).
        """
        chosen = method or next(
            (str(layer["method"]) for _, layer in reversed(layers) if layer and "method" in layer),
            "contrastive",
        )
        with apply_lock(self.path), self._connect() as connection:
            self._remove_unpublished(connection)
            pending = list_requests(connection, status="pending")
            groups = [
                group
                for group in (
                    [r for r in pending if r.kind == "class"],
                    [r for r in pending if r.kind == "samples"],
                )
                if group
            ]
            facts = self._facts(connection)
            dataset, model = facts["dataset"], facts["model"]
            configs = [  # every config resolves before any data is loaded
                resolve_unlearn_config(
                    chosen,
                    scenario_of(group),
                    dataset=dataset,
                    model=model,
                    layers=[*layers, ("method", {"method": chosen})],
                    overrides=overrides,
                ).config
                for group in groups
            ]
            # Every version keeps the classes forgotten so far forgotten (ledger_reforget).
            any_class = any(r.kind == "class" for r in list_requests(connection, status="applied"))
            reforget = (
                reforget_config(
                    chosen, dataset=dataset, model=model, layers=layers, overrides=overrides
                )
                if groups and (any_class or groups[0][0].kind == "class")
                else None
            )
            written = []
            try:
                for group, config in zip(groups, configs, strict=True):
                    written.append(
                        self._apply_group(
                            connection, group, config, reforget, audit=audit, quiet=quiet
                        )
                    )
            finally:  # ours alone: we hold the lock
                shutil.rmtree(self.path / STAGING_DIR, ignore_errors=True)
            return written

    def _remove_unpublished(self, connection: sqlite3.Connection) -> None:
        """Remove what a killed apply left: staging directories, and version directories
        without a committed row (called under the apply lock)."""
        shutil.rmtree(self.path / STAGING_DIR, ignore_errors=True)
        published = {str(v.number) for v in list_versions(connection)}
        for entry in sorted((self.path / VERSIONS_DIR).iterdir()):
            if entry.name not in published:
                shutil.rmtree(entry, ignore_errors=True)

    def _data_checked(self, facts: Mapping[str, str]) -> tuple[DatasetBundle, TrainConfig]:
        """The ledger's dataset, checked against the fingerprint recorded at init."""
        train_config = TrainConfig.model_validate(self._original().train_config)
        if self._data is None:
            ensure_dataset(train_config)
            data = load_training_data(train_config)
            if data_fingerprint(data) != facts["data_sha256"]:
                raise LedgerError(
                    f"the {facts['dataset']} data on this machine differ from the data the "
                    f"ledger {self.path} was created with (SHA-256 {facts['data_sha256'][:16]}...)"
                )
            self._data = data
        return self._data, train_config

    def _apply_group(
        self,
        connection: sqlite3.Connection,
        group: list[RequestRow],
        config: Any,
        reforget: UnlearnConfig | None,
        *,
        audit: bool,
        quiet: bool,
    ) -> VersionRow:
        facts = self._facts(connection)
        parent = list_versions(connection)[-1]
        number = parent.number + 1
        parent_path = self.path / parent.checkpoint
        if sha256_file(parent_path) != parent.checkpoint_sha256:
            raise LedgerError(
                f"{parent_path} does not match its recorded SHA-256: the latest version was "
                "changed after it was written; run `conun ledger verify` to see what differs"
            )
        data, train_config = self._data_checked(facts)
        earlier = list_requests(connection, status="applied")
        try:
            plan = build_plan(connection, data, self._validation(), earlier, group)
        except ForgetRequestError as error:
            mark_failed(connection, [r.id for r in group], str(error))
            raise
        frame, split, forget, before = plan.frame, plan.split, plan.forget, plan.before
        scenario, classes, validation = split.scenario, split.classes, plan.validation
        model, meta = load_checkpoint_for(parent_path, data)
        unlearned, record = run_method(
            config,
            model,
            frame.data,
            split,
            train_config=train_config,
            original_seconds=self._original().seconds,
            quiet=quiet,
        )
        unlearned, reforgot = keep_classes_forgotten(
            unlearned,
            record,
            data,
            plan,
            reforget,
            levels=certified_levels(self.path, earlier),
            train_config=train_config,
            original_seconds=self._original().seconds,
            quiet=quiet,
        )
        record.forget = {"classes": list(classes)} if classes else {"num_samples": len(forget)}
        if audit:
            audit_against(
                unlearned,
                record,
                frame.data,
                split,
                seed=config.seed,
                batch_size=config.eval_batch_size,
                channels_last=config.channels_last,
            )
        measured = measure(
            unlearned,
            data,
            plan.honoured,
            retain=plan.retain,
            validation=plan.validation,
            batch_size=config.eval_batch_size,
        )
        staging = self.path / STAGING_DIR / f"{number}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        save_checkpoint(
            staging,
            unlearned,
            dataclasses.replace(
                meta,
                method=record.method,
                seconds=record.seconds,
                # In the training set's indices; what earlier versions forgot is neither
                # forgotten nor retained here.
                split=ForgetRetainSplit(
                    scenario,
                    len(data.train),
                    forget,
                    plan.retain,
                    union([validation, before]),
                    classes=classes,
                ).to_dict(),
                metrics=record.metrics,
                versions=None,
            ),
        )
        Results(meta.dataset, meta.model, config.seed, config.device, [record]).write(staging)
        atomic_write_text(staging / CONFIG_FILE, config_to_yaml(config))
        final = Path(VERSIONS_DIR) / str(number)
        document = {
            "format": FORMAT,
            "created_at": now(),
            "version": number,
            "parent": parent.number,
            "ledger": {
                "dataset": facts["dataset"],
                "model": facts["model"],
                "num_classes": int(facts["num_classes"]),
                "num_train": int(facts["num_train"]),
                "data_sha256": facts["data_sha256"],
            },
            "checkpoint": {
                "path": (final / CHECKPOINT_FILE).as_posix(),
                "sha256": sha256_file(staging / CHECKPOINT_FILE),
            },
            "parent_checkpoint": {"path": parent.checkpoint, "sha256": parent.checkpoint_sha256},
            "requests": [request_entry(r) for r in group],
            "sets": plan.sets(),
            "method": record.method,
            "config": config.model_dump(mode="json"),
            "seconds": record.seconds,
            "forget_batches": record.forget_batches,
            "passes": record.passes,
            "stopped_by": record.extra.get("stopped_by"),
            "reforget": reforgot,
            **measured,
            "audit": audit_numbers(record.metrics) if audit else None,
            "passed": all(check["passed"] for check in measured["checks"]),
            "versions": library_versions(),
        }
        validate_certificate(document)
        atomic_write_json(staging / CERTIFICATE_FILE, document)
        atomic_write_text(staging / CERTIFICATE_HTML, certificate_html(document))
        row = VersionRow(
            number=number,
            parent=parent.number,
            created_at=document["created_at"],
            checkpoint=document["checkpoint"]["path"],
            checkpoint_sha256=document["checkpoint"]["sha256"],
            method=record.method,
            config=document["config"],
            results=record.to_dict(),
            seconds=record.seconds,
            certificate=(final / CERTIFICATE_FILE).as_posix(),
            certificate_sha256=sha256_file(staging / CERTIFICATE_FILE),
            requests=tuple(r.id for r in group),
        )
        self._publish(connection, staging, row)
        failed = [check for check in measured["checks"] if not check["passed"]]
        if failed:
            logger.warning(
                "version %d: %d of %d forget-set checks failed (requests %s); see %s",
                number,
                len(failed),
                len(measured["checks"]),
                sorted({check["request"] for check in failed}),
                self.path / str(row.certificate),
            )
        return row

    def _publish(self, connection: sqlite3.Connection, staging: Path, row: VersionRow) -> None:
        """Rename ``staging`` to ``versions/N`` and commit ``row`` together: a kill between
        the two leaves a directory without a row, which the next apply removes."""
        final = self.path / VERSIONS_DIR / str(row.number)
        with transaction(connection):
            shutil.rmtree(final, ignore_errors=True)  # unpublished: we hold the apply lock
            os.replace(staging, final)
            _fsync_directory(final.parent)
            try:
                insert_version(connection, row)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise

    # -- status and verify ----------------------------------------------------------------------

    def status(self) -> LedgerStatus:
        """The ledger's facts, requests and versions (read-only; safe during an apply)."""
        with self._connect() as connection:
            return LedgerStatus(
                self._facts(connection), list_requests(connection), list_versions(connection)
            )

    def verify(
        self,
        version: int | None = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        recompute: bool = True,
    ) -> VerifyReport:
        """Check the ledger against its own records; every version, or only ``version``.

        Recomputes the SHA-256 of every checkpoint, certificate and stored ids file and
        compares them with the database and the certificates; with ``recompute``, loads each
        model and the data and measures the certificate's checks (and audit) again.

        Raises:
            LedgerError: ``version`` is not in the ledger.
        """
        report = VerifyReport()
        with self._connect() as connection:
            facts = self._facts(connection)
            versions = list_versions(connection)
            requests = {r.id: r for r in list_requests(connection)}
            chosen = [v for v in versions if version is None or v.number == version]
            if not chosen:
                raise LedgerError(
                    f"the ledger has no version {version}: versions are 0..{versions[-1].number}"
                )
            to_check = (
                list(requests.values())
                if version is None
                else [requests[i] for i in chosen[0].requests]
            )
            for request in to_check:
                self._verify_request(connection, request, report)
            for row in chosen:
                if self._verify_files(row, versions, requests, report) and recompute:
                    self._verify_checks(connection, row, facts, requests, tolerance, report)
        return report

    def _verify_request(
        self, connection: sqlite3.Connection, request: RequestRow, report: VerifyReport
    ) -> None:
        if request.kind == "class":
            digest = hashlib.sha256(canonical_classes(request.classes)).hexdigest()
            expect(report, digest == request.ids_sha256, f"request {request.id} classes hash")
            return
        assert request.ids_file is not None
        path = self.path / request.ids_file
        if not path.is_file():
            report.problems.append(f"{path}: ids file of request {request.id} is missing")
            return
        digest = sha256_file(path)
        if digest != request.ids_sha256:
            report.problems.append(
                f"{path}: SHA-256 {digest} does not match the recorded {request.ids_sha256} "
                f"(ids of request {request.id})"
            )
            return
        if request.status != "failed":
            stored = request_samples(connection, request.id)
            expect(
                report,
                canonical_ids(stored) == path.read_bytes(),
                f"{path}: ids of request {request.id} match the database",
            )
        report.checked.append(f"{path}: SHA-256 matches (request {request.id})")

    def _verify_files(
        self,
        row: VersionRow,
        versions: list[VersionRow],
        requests: Mapping[int, RequestRow],
        report: VerifyReport,
    ) -> bool:
        """Hashes of a version's checkpoint and certificate, and the certificate against the
        database; whether everything matched (then its checks may be recomputed)."""
        problems = len(report.problems)
        checkpoint = self.path / row.checkpoint
        expect_hash(
            report, checkpoint, row.checkpoint_sha256, f"checkpoint of version {row.number}"
        )
        if row.certificate is None:  # version 0: the original
            return len(report.problems) == problems
        certificate = self.path / row.certificate
        if not expect_hash(
            report, certificate, row.certificate_sha256, f"certificate of version {row.number}"
        ):
            return False
        document = read_json(certificate)
        try:
            validate_certificate(document)
        except Exception as error:  # jsonschema.ValidationError: report it, do not stop
            report.problems.append(
                f"{certificate}: does not follow the certificate schema: {error}"
            )
            return False
        parent = next(v for v in versions if v.number == row.parent)
        expected = {
            "checkpoint": {"path": row.checkpoint, "sha256": row.checkpoint_sha256},
            "parent_checkpoint": {"path": parent.checkpoint, "sha256": parent.checkpoint_sha256},
            "requests": [request_entry(requests[i]) for i in row.requests],
        }
        for key, value in expected.items():
            expect(report, document.get(key) == value, f"{certificate}: {key} match the ledger")
        return len(report.problems) == problems

    def _verify_checks(
        self,
        connection: sqlite3.Connection,
        row: VersionRow,
        facts: Mapping[str, str],
        requests: Mapping[int, RequestRow],
        tolerance: float,
        report: VerifyReport,
    ) -> None:
        try:
            data, _ = self._data_checked(facts)
        except LedgerError as error:
            report.problems.append(str(error))
            return
        model, _ = load_checkpoint_for(self.path / row.checkpoint, data)
        if row.certificate is None:
            report.checked.append(f"version 0 loads and fits the {facts['dataset']} data")
            return
        certificate = self.path / row.certificate
        document = read_json(certificate)
        earlier = [r for r in requests.values() if r.version is not None and r.version < row.number]
        current = [requests[i] for i in row.requests]
        plan = build_plan(connection, data, self._validation(), earlier, current)
        expect(report, document["sets"] == plan.sets(), f"{certificate}: forget and retain sets")
        config = document["config"]
        recomputed = measure(
            model,
            data,
            plan.honoured,
            retain=plan.retain,
            validation=plan.validation,
            batch_size=int(config["eval_batch_size"]),
        )
        recomputed["audit"] = (
            _recomputed_audit(model, plan.frame.data, plan.split, config)
            if document.get("audit")
            else None
        )
        mismatches = compare(document, recomputed, tolerance, str(certificate))
        report.problems += mismatches
        if not mismatches:
            report.checked.append(
                f"{certificate}: {len(recomputed['checks'])} checks and the utility recomputed"
            )


def _recomputed_audit(
    model: Any, data: DatasetBundle, split: ForgetRetainSplit, config: Mapping[str, Any]
) -> dict[str, float]:
    record = RunRecord(scenario=split.scenario, method="verify", seconds=0.0, metrics={})
    audit_against(
        model,
        record,
        data,
        split,
        seed=int(config["seed"]),
        batch_size=int(config["eval_batch_size"]),
        channels_last=bool(config["channels_last"]),
    )
    return audit_numbers(record.metrics)


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable before the commit that refers to it."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


__all__ = ["DEFAULT_TOLERANCE", "LEDGER_FORMAT", "Ledger", "LedgerStatus", "VerifyReport"]
