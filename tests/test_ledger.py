"""The ledger's lifecycle through the Python API: requests, sequential applies, certificates,
verification, and what a bad request, a failed or killed apply and concurrent writers leave."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import conun
from conun.data.splits import ForgetRequestError
from conun.workflows import ledger as ledger_module
from conun.workflows.ledger import Ledger
from conun.workflows.ledger_certificate import validate_certificate
from conun.workflows.ledger_plan import Frame
from conun.workflows.ledger_store import LedgerBusyError, LedgerError, sha256_file
from conun.workflows.training import TrainedModel


@pytest.fixture()
def ledger(tmp_path: Path, digits_run: tuple[Path, TrainedModel]) -> Ledger:
    return Ledger.init(tmp_path / "ledger", checkpoint=digits_run[0])


def trained_ids(trained: TrainedModel, count: int, start: int = 0) -> list[int]:
    """``count`` training ids outside the validation split, from ``start`` on."""
    held_out = set(trained.meta.validation)
    return [i for i in range(start, 1437) if i not in held_out][:count]


def snapshot(ledger: Ledger) -> tuple[Any, ...]:
    """Everything a refused request must leave unchanged: the rows and the files."""
    with sqlite3.connect(ledger.path / "ledger.sqlite3") as connection:
        requests = connection.execute("SELECT * FROM requests").fetchall()
        samples = connection.execute("SELECT COUNT(*) FROM request_samples").fetchone()
        versions = connection.execute("SELECT number FROM versions").fetchall()
    files = sorted(
        str(p.relative_to(ledger.path))
        for p in ledger.path.rglob("*")
        if "sqlite3" not in p.name and p.name != "apply.lock"
    )
    return requests, samples, versions, files


def int_lists(document: Any) -> list[list[int]]:
    """Every list of integers anywhere in a JSON document."""
    if isinstance(document, dict):
        return [found for value in document.values() for found in int_lists(value)]
    if isinstance(document, list):
        if document and all(isinstance(v, int) and not isinstance(v, bool) for v in document):
            return [document]
        return [found for value in document for found in int_lists(value)]
    return []


def test_sequential_requests_versions_certificates_and_verify(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel]
) -> None:
    trained = digits_run[1]
    first_ids = trained_ids(trained, 40)
    assert ledger.request(classes=[3], reference="ticket-1") == 1
    assert ledger.request(ids=first_ids, reference="ticket-2") == 2
    assert [r.status for r in ledger.status().requests] == ["pending", "pending"]

    written = ledger.apply(audit=True)
    # Class requests and sample requests each get a version (each kind has its own rule).
    assert [(v.number, v.parent, v.requests) for v in written] == [(1, 0, (1,)), (2, 1, (2,))]
    status = ledger.status()
    assert [(r.status, r.version) for r in status.requests] == [("applied", 1), ("applied", 2)]
    assert "ticket-2" in status.format() and "applied" in status.format()

    certificate = json.loads((ledger.path / "versions/2/certificate.json").read_text())
    validate_certificate(certificate)
    assert certificate["requests"][0]["reference"] == "ticket-2"
    assert certificate["audit"]["mia_forget_member_rate"] is not None
    # Version 2's retain set excludes class 3, forgotten by version 1; its forget set is the
    # requested ids minus those of class 3 (already forgotten).
    class_3 = {i for i in first_ids if int(trained.data.train.labels[i]) == 3}
    assert certificate["sets"]["forget"]["samples"] == len(first_ids) - len(class_3)
    held_out = set(trained.meta.validation)
    trained_class_3 = sum(
        1
        for i, label in enumerate(trained.data.train.labels.tolist())
        if label == 3 and i not in held_out
    )
    version_1 = json.loads((ledger.path / "versions/1/certificate.json").read_text())["sets"]
    assert version_1["forget"]["samples"] == trained_class_3
    assert certificate["sets"]["forgotten_so_far"]["samples"] == (
        trained_class_3 + certificate["sets"]["forget"]["samples"]
    )
    num_train, num_validation = 1437, len(trained.meta.validation)
    assert certificate["sets"]["retain"]["samples"] == (
        num_train - num_validation - certificate["sets"]["forgotten_so_far"]["samples"]
    )
    # Every request so far is checked on version 2: the earlier class request too.
    assert {(c["request"], c["set"], c["current"]) for c in certificate["checks"]} == {
        (1, "forget_train", False),
        (1, "forget_test", False),
        (2, "forget_train", True),
    }
    # Version 1 forgot class 3 (chance level is the target); version 2 re-checks it, and its
    # certificate passes only if every check, the earlier request's included, passes.
    first = json.loads((ledger.path / "versions/1/certificate.json").read_text())
    assert first["passed"] and {c["target"] for c in first["checks"]} == {0.1}
    assert certificate["passed"] == all(c["passed"] for c in certificate["checks"])
    # No pixels and no ids in the certificate: hashes and counts only.
    assert all(len(values) <= 10 for values in int_lists(certificate))
    page = (ledger.path / "versions/2/certificate.html").read_text()
    assert "<script" not in page and "data:image" not in page and "ticket-2" in page

    report = ledger.verify()
    assert report.ok, report.problems
    assert any("recomputed" in line for line in report.checked)

    # A third request arrives later: version 3 starts from version 2.
    assert ledger.request(ids=trained_ids(trained, 20, start=900)) == 3
    (third,) = ledger.apply()
    assert (third.number, third.parent, third.requests) == (3, 2, (3,))
    assert ledger.verify(3).ok
    assert ledger.apply() == []  # nothing pending


def test_verify_names_the_changed_file(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel]
) -> None:
    ledger.request(ids=trained_ids(digits_run[1], 30))
    ledger.apply()
    assert ledger.verify().ok

    def flip_one_byte(path: Path, offset: int) -> bytes:
        original = path.read_bytes()
        changed = bytearray(original)
        changed[offset] ^= 0x01
        path.write_bytes(bytes(changed))
        return original

    checkpoint = ledger.path / "versions/1/checkpoint.safetensors"
    original = flip_one_byte(checkpoint, checkpoint.stat().st_size - 100)  # inside the weights
    report = ledger.verify()
    assert not report.ok
    assert any(str(checkpoint) in line and "SHA-256" in line for line in report.problems)
    checkpoint.write_bytes(original)
    assert ledger.verify().ok

    (ids_file,) = (ledger.path / "ids").iterdir()
    text = ids_file.read_bytes()
    original = flip_one_byte(ids_file, text.index(b",") - 1)  # a digit: still valid JSON
    report = ledger.verify(recompute=False)
    assert [line for line in report.problems if str(ids_file) in line], report.problems
    ids_file.write_bytes(original)

    # A forger who edits a certificate's numbers and its recorded hash is caught by the
    # recomputation of the checks from the stored model and data.
    certificate = ledger.path / "versions/1/certificate.json"
    document = json.loads(certificate.read_text())
    document["checks"][0]["accuracy"] = 0.0
    certificate.write_text(json.dumps(document))
    with sqlite3.connect(ledger.path / "ledger.sqlite3") as connection:
        connection.execute(
            "UPDATE versions SET certificate_sha256 = ? WHERE number = 1",
            (sha256_file(certificate),),
        )
    report = ledger.verify(1)
    assert any(
        "checks[0].accuracy" in line and str(certificate) in line for line in report.problems
    )
    with pytest.raises(LedgerError, match="no version 7"):
        ledger.verify(7)


def test_bad_requests_are_refused_and_write_nothing(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    trained = digits_run[1]
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(LedgerError, match="already holds a ledger"):
        Ledger.init(ledger.path, checkpoint=digits_run[0])

    ids = trained_ids(trained, 10)
    ledger.request(classes=[4])
    ledger.request(ids=ids)
    ids_file = tmp_path / "same.txt"
    ids_file.write_text("\n".join(map(str, reversed(ids))) + "\n")
    before = snapshot(ledger)
    refused: list[tuple[dict[str, Any], str]] = [
        ({"ids": [5, 99_999]}, "out of range"),
        ({"ids": [ids[-1] + 1, ids[-1] + 1]}, "duplicated"),
        ({"ids": trained.meta.validation[:2]}, "validation split"),
        ({"ids_file": ids_file}, "already requested: request 2"),
        ({"ids": [ids[0], 1000]}, "already requested: " + str(ids[0])),
        ({"ids_file": tmp_path / "absent.txt"}, "does not exist"),
        ({"classes": [4]}, r"class \[4\] is already requested"),
        ({"classes": [12]}, "not in the data"),
        ({"classes": [1], "ids": [7]}, "exactly one"),
        ({}, "exactly one"),
    ]
    for arguments, message in refused:
        with pytest.raises(ForgetRequestError, match=message):
            ledger.request(**arguments)
        assert snapshot(ledger) == before, arguments
    ledger.apply()
    with pytest.raises(ForgetRequestError, match=r"class \[4\] is already forgotten"):
        ledger.request(classes=[4])


def test_failed_apply_leaves_requests_pending_and_no_version(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.request(ids=trained_ids(digits_run[1], 25))
    before = snapshot(ledger)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    # Fails after the version's files are complete and renamed into place, before the commit.
    monkeypatch.setattr(ledger_module, "insert_version", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ledger.apply()
    assert snapshot(ledger) == before  # no row, no directory, requests pending
    monkeypatch.undo()

    # A kill between the rename and the commit leaves an unpublished directory; and a kill
    # while writing leaves a staging directory: the next apply removes both, then succeeds.
    (ledger.path / "versions/1").mkdir()
    (ledger.path / "versions/1/checkpoint.safetensors").write_bytes(b"half")
    (ledger.path / "staging/1-999").mkdir(parents=True)
    (version,) = ledger.apply()
    assert version.number == 1 and ledger.verify().ok
    assert not (ledger.path / "staging").exists()

    # A request the ledger cannot honour is marked failed, with the reason; its ids are free
    # to be requested again.
    ids = trained_ids(digits_run[1], 5, start=1000)
    ledger.request(ids=ids)

    def impossible(*args: Any, **kwargs: Any) -> None:
        raise ForgetRequestError("the retain set is empty")

    monkeypatch.setattr(Frame, "split", impossible)
    with pytest.raises(ForgetRequestError):
        ledger.apply()
    failed = ledger.status().requests[-1]
    assert (failed.status, failed.error) == ("failed", "the retain set is empty")
    assert ledger.request(ids=ids) == failed.id + 1


def test_the_schema_version_is_checked(ledger: Ledger) -> None:
    with sqlite3.connect(ledger.path / "ledger.sqlite3") as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="newer than this conun"):
        Ledger(ledger.path)
    assert conun.Ledger is Ledger


def add_requests(
    path: Path, worker: int, ids: list[int], start: Any, results: Any
) -> None:  # pragma: no cover - runs in a forked process
    """Worker of the concurrency test: 8 sample requests, then class 7 (which one worker only
    may record); sends ``[kind, id]`` pairs back."""
    ledger = Ledger(path)
    start.wait()
    made = [["ids", ledger.request(ids=[ids[k]], reference=f"{worker}-{k}")] for k in range(8)]
    with contextlib.suppress(ForgetRequestError):
        made.append(["class", ledger.request(classes=[7])])
    results.put(made)


def test_concurrent_requests_from_four_processes(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel]
) -> None:
    ids = trained_ids(digits_run[1], 32, start=1000)
    # Forked: the workers share the parent's imports, so that they start at once and their
    # transactions collide (released together by the barrier).
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(4), context.Queue()
    workers = [
        context.Process(
            target=add_requests,
            args=(ledger.path, w, ids[8 * w : 8 * w + 8], start, results),
        )
        for w in range(4)
    ]
    for worker in workers:
        worker.start()
    made = [entry for _ in workers for entry in results.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    requests = ledger.status().requests
    # Exactly the requests sent: 32 sample requests and one class 7; no id returned twice.
    assert sorted(number for _, number in made) == [r.id for r in requests]
    assert len(requests) == 33
    assert sorted(r.reference or "" for r in requests if r.kind == "samples") == sorted(
        f"{w}-{k}" for w in range(4) for k in range(8)
    )
    assert [r.classes for r in requests if r.kind == "class"] == [(7,)]
    with sqlite3.connect(ledger.path / "ledger.sqlite3") as connection:
        samples = sorted(s for (s,) in connection.execute("SELECT sample FROM request_samples"))
    assert samples == ids
    assert ledger.verify(recompute=False).ok  # every stored ids file matches its request


def test_a_killed_apply_leaves_the_ledger_consistent(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel]
) -> None:
    ledger.request(classes=[2])
    before = snapshot(ledger)
    applying = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conun",
            "ledger",
            "apply",
            str(ledger.path),
            "--quiet",
            "--set",
            "stopping.rule=none",
            "--set",
            "stopping.max_passes=1000",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lock = ledger.path / "apply.lock"
    deadline = time.monotonic() + 60
    while "pid" not in (lock.read_text() if lock.exists() else ""):
        assert applying.poll() is None, applying.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # A second apply while the first runs is refused at once, naming the holder.
    with pytest.raises(LedgerBusyError, match=f"already|another .*pid {applying.pid}"):
        ledger.apply()
    time.sleep(2.0)  # into the unlearning loop
    applying.send_signal(signal.SIGKILL)
    applying.wait(timeout=30)

    assert snapshot(ledger)[:3] == before[:3]  # requests pending, no version row
    checkpoints = sorted(
        str(p.relative_to(ledger.path)) for p in ledger.path.rglob("*.safetensors")
    )
    assert checkpoints == ["versions/0/checkpoint.safetensors"]
    # The kernel released the lock with the process: the next apply starts over cleanly.
    (version,) = ledger.apply()
    assert version.number == 1 and ledger.status().requests[0].status == "applied"
    assert ledger.verify(recompute=False).ok


@pytest.mark.parametrize("class_accuracy", [None, 0.05])
def test_a_later_request_leaves_an_earlier_class_under_its_rules_bound(
    ledger: Ledger, digits_run: tuple[Path, TrainedModel], class_accuracy: float | None
) -> None:
    # Without the re-forget step, a 40-sample request run for 3 passes brings class 3 back
    # from ~4.6% to ~8.4% of its training samples (the BatchNorm statistics drift on batches
    # without class 3; with the default's stopping rule it stops after a few steps, and the
    # step has nothing to do). Under chance (the default bound) that is left alone; above a
    # bound of 5% it is unlearned again, back to where version 1 left it.
    bound = [] if class_accuracy is None else [f"stopping.class_accuracy={class_accuracy}"]
    ledger.request(classes=[3])
    ledger.apply(overrides=bound)
    ledger.request(ids=trained_ids(digits_run[1], 40))
    ledger.apply(overrides=[*bound, "stopping.rule=none", "stopping.max_passes=3"])
    first, second = (
        json.loads((ledger.path / f"versions/{v}/certificate.json").read_text()) for v in (1, 2)
    )

    def class_3(document: dict[str, Any], part: str) -> float:
        (check,) = [c for c in document["checks"] if c["request"] == 1 and c["set"] == part]
        return float(check["accuracy"])

    (check,) = second["reforget"]["checks"]
    assert check["bound"] == (class_accuracy or 0.1)
    if class_accuracy is None:
        assert not second["reforget"]["runs"], second["reforget"]
        assert class_3(first, "forget_train") < class_3(second, "forget_train") <= 0.1
    else:
        assert second["reforget"]["runs"], second["reforget"]  # class 3 came back, and went again
        assert class_3(second, "forget_train") <= class_3(first, "forget_train")
        assert class_3(second, "forget_test") <= class_accuracy
    assert second["passed"]
    # The re-forget's checks are the version's time too.
    assert second["seconds"] >= second["reforget"]["seconds"]
    assert ledger.verify(2).ok
