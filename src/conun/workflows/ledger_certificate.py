"""The certificate of a ledger version: what it honours, the hashes that pin it down, and the
checks of its forgetting and its retained utility, as JSON (schema shipped in the package) and
as a self-contained HTML page.

The checks are measured here, deterministically on the CPU, so that ``conun ledger verify``
recomputes the very same numbers from the stored checkpoint and the data. A certificate holds
indices' hashes and counts, never a forgotten sample's pixels or ids.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import torch
from torch import Tensor

from conun.data.arrays import DatasetBundle
from conun.evaluation.accuracy import model_logits
from conun.evaluation.privacy import AUDIT_COLUMNS
from conun.models.base import Classifier
from conun.report.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    Paragraph,
    Report,
    Table,
    render_html,
)
from conun.workflows.ledger_store import RequestRow, sha256_file

CERTIFICATE_FILE = "certificate.json"
CERTIFICATE_HTML = "certificate.html"
FORMAT = "conun-certificate/1"

CHECK_Z = 1.96
"""A check passes when the accuracy is at most its target plus ``CHECK_Z`` binomial standard
errors of the target on that many samples: the full-set accuracy of a model whose rule held on
evaluation subsets may sit a sampling error above the target."""


@dataclass(frozen=True)
class RequestForget:
    """A request and the training samples it forgets.

    Attributes:
        request: the request.
        forget: ``(N,)`` sorted int64 training-set indices it forgets (validation excluded).
        current: honoured by the version being certified (else by an earlier one).
    """

    request: RequestRow
    forget: Tensor
    current: bool


@cache
def certificate_schema() -> dict[str, Any]:
    """The JSON Schema of certificate.json shipped inside the package."""
    text = (resources.files("conun") / "schema" / "certificate.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_certificate(document: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``document`` breaks the certificate schema."""
    jsonschema.validate(dict(document), certificate_schema())


def _margin(target: float, samples: int) -> float:
    return CHECK_Z * math.sqrt(max(target * (1 - target), 0.0) / max(samples, 1))


def _check(
    request: RequestForget, part: str, correct: Tensor, target: float, target_name: str
) -> dict[str, Any]:
    accuracy = float(correct.double().mean())
    margin = _margin(target, correct.numel())
    return {
        "request": request.request.id,
        "current": request.current,
        "set": part,
        "samples": int(correct.numel()),
        "accuracy": accuracy,
        "target": target,
        "target_is": target_name,
        "margin": margin,
        "passed": accuracy <= target + margin,
    }


def measure(
    model: Classifier,
    data: DatasetBundle,
    requests: Sequence[RequestForget],
    *,
    retain: Tensor,
    validation: Tensor,
    batch_size: int,
) -> dict[str, Any]:
    """The forget-set checks of every request honoured so far and the retained utility.

    Each request's accuracy is compared with its rule's target: the chance level ``1/C`` for a
    class (on its training samples and on its test samples), the accuracy on held-out data
    of the retained classes: the validation split, or the test set when there is none) for
    samples.

    Args:
        model: the certified model (evaluated on the CPU, whatever its device).
        data: the ledger's dataset.
        requests: every request honoured up to this version, with its samples.
        retain: ``(Nr,)`` training indices still retained (nothing forgotten, no validation).
        validation: ``(Nv,)`` training indices held out before the original's training (those
            of forgotten classes are left out of the held-out accuracy).
        batch_size: images per forward pass.

    Returns:
        ``{"checks": [...], "utility": {...}}`` as written into certificate.json.
    """

    def correct_of(images: Tensor, labels: Tensor) -> Tensor:
        logits = model_logits(model, images, batch_size=batch_size, device="cpu")
        return logits.argmax(dim=1) == labels

    train_correct = correct_of(data.train.images, data.train.labels)
    test_correct = correct_of(data.test.images, data.test.labels)
    forgotten_classes = torch.tensor(
        sorted({c for each in requests for c in each.request.classes}), dtype=torch.long
    )
    # Unseen data of the retained classes: a model that never saw a forgotten class (the
    # retrained one) is at chance on it, which is not what a forgotten sample should match.
    retained_test = ~torch.isin(data.test.labels, forgotten_classes)
    validation = validation[~torch.isin(data.train.labels[validation], forgotten_classes)]
    if validation.numel():
        held_out, held_out_name = train_correct[validation], "validation accuracy"
    else:
        held_out, held_out_name = test_correct[retained_test], "test accuracy"
    held_out_acc = float(held_out.double().mean())
    chance = 1.0 / data.num_classes
    checks: list[dict[str, Any]] = []
    for each in requests:
        if each.request.kind == "class":
            in_classes = torch.isin(data.test.labels, torch.tensor(each.request.classes))
            checks.append(
                _check(each, "forget_train", train_correct[each.forget], chance, "chance (1/C)")
            )
            checks.append(
                _check(each, "forget_test", test_correct[in_classes], chance, "chance (1/C)")
            )
        else:
            checks.append(
                _check(
                    each, "forget_train", train_correct[each.forget], held_out_acc, held_out_name
                )
            )
    utility = {
        "test_acc": float(test_correct.double().mean()),
        "retained_classes_test_acc": float(test_correct[retained_test].double().mean()),
        "retain_train_acc": float(train_correct[retain].double().mean()),
        "held_out_acc": held_out_acc,
        "held_out_set": "validation" if validation.numel() else "test",
    }
    return {"checks": checks, "utility": utility}


def audit_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The membership-attack numbers (:data:`AUDIT_COLUMNS`) among a run's metrics."""
    return {key: float(metrics[key]) for key in AUDIT_COLUMNS if metrics.get(key) is not None}


def compare(
    recorded: Mapping[str, Any], recomputed: Mapping[str, Any], tolerance: float, where: str
) -> list[str]:
    """What differs between a certificate's measured numbers and their recomputation.

    Args:
        recorded: ``{"checks", "utility", "audit"}`` of the certificate.
        recomputed: the same keys, measured again.
        tolerance: largest accepted absolute difference of a number.
        where: the certificate's path, named in every problem.

    Returns:
        One line per difference (empty: everything matches).
    """
    problems: list[str] = []

    def numbers(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                numbers(a.get(key), b.get(key), f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                numbers(x, y, f"{path}[{index}]")
        elif isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or a is None:
            if a != b:
                problems.append(f"{where}: {path} is {a!r}, recomputed {b!r}")
        elif isinstance(a, int | float) and isinstance(b, int | float):
            if abs(a - b) > tolerance:
                problems.append(f"{where}: {path} is {a:.6g}, recomputed {b:.6g}")
        elif a != b:
            problems.append(f"{where}: {path} is {a!r}, recomputed {b!r}")

    for key in ("checks", "utility", "audit"):
        numbers(recorded.get(key), recomputed.get(key), key)
    return problems


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def certificate_report(document: Mapping[str, Any]) -> Report:
    """The certificate as report blocks (rendered to HTML by :func:`certificate_html`)."""
    passed = all(check["passed"] for check in document["checks"])
    checkpoint, parent = document["checkpoint"], document["parent_checkpoint"]
    blocks: list[Block] = [
        Paragraph(
            f"Model version {document['version']} of a {document['ledger']['model']} on "
            f"{document['ledger']['dataset']}, unlearned from version {document['parent']} with "
            f"{document['method']} in {document['seconds']:.2f} s; "
            f"{'every check passed' if passed else 'SOME CHECKS FAILED'}. "
            "Verify it with `conun ledger verify LEDGER --version "
            f"{document['version']}`."
        ),
        Heading("Requests honoured"),
        Table(
            ("request", "received", "kind", "what", "reference", "ids SHA-256"),
            tuple(
                (
                    str(r["id"]),
                    r["received_at"],
                    r["kind"],
                    ", ".join(map(str, r["classes"]))
                    if r["kind"] == "class"
                    else f"{r['num_samples']} samples",
                    r["reference"] or "",
                    r["ids_sha256"],
                )
                for r in document["requests"]
            ),
        ),
        Heading("Hashes (SHA-256)"),
        Table(
            ("what", "samples", "SHA-256"),
            (
                ("checkpoint " + checkpoint["path"], "", checkpoint["sha256"]),
                ("parent checkpoint " + parent["path"], "", parent["sha256"]),
                *(
                    (
                        f"{name.replace('_', ' ')} (training-set indices)",
                        str(part["samples"]),
                        part["sha256"],
                    )
                    for name, part in document["sets"].items()
                ),
                ("training and test data", "", document["ledger"]["data_sha256"]),
            ),
        ),
        Heading("Forget-set checks"),
        Paragraph(
            "Accuracy (%) of every request honoured so far against its rule's target; a check "
            f"passes at most {CHECK_Z} binomial standard errors above the target."
        ),
        Table(
            (
                "request",
                "this version",
                "set",
                "samples",
                "accuracy",
                "target",
                "target is",
                "passed",
            ),
            tuple(
                (
                    str(c["request"]),
                    "yes" if c["current"] else "earlier",
                    c["set"],
                    str(c["samples"]),
                    _percent(c["accuracy"]),
                    _percent(c["target"]),
                    c["target_is"],
                    "yes" if c["passed"] else "NO",
                )
                for c in document["checks"]
            ),
        ),
        Heading("Retained utility"),
        Table(
            ("number", "value (%)"),
            tuple(
                (key, _percent(value))
                for key, value in document["utility"].items()
                if isinstance(value, float)
            ),
        ),
    ]
    if document.get("audit"):
        blocks += [
            Heading("Membership attacks"),
            Table(
                ("number", "value", "meaning"),
                tuple(
                    (key, f"{value:.4g}", AUDIT_COLUMNS[key][0])
                    for key, value in document["audit"].items()
                ),
            ),
        ]
    blocks += [
        Heading("Method and config"),
        CodeBlock(json.dumps(document["config"], indent=2), "json"),
        Heading("Library versions"),
        BulletList(tuple(f"{name} {value}" for name, value in document["versions"].items())),
    ]
    return Report(f"conun ledger certificate: version {document['version']}", blocks)


def certificate_html(document: Mapping[str, Any]) -> str:
    """The certificate as one self-contained HTML page."""
    return render_html(certificate_report(document))


@dataclass
class VerifyReport:
    """What ``verify`` found.

    Attributes:
        checked: one line per thing that matched.
        problems: one line per mismatch, naming the file (empty: the ledger verifies).
    """

    checked: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def expect(report: VerifyReport, holds: bool, what: str) -> bool:
    """Record ``what`` as checked when it ``holds``, else as a mismatch; return ``holds``."""
    (report.checked if holds else report.problems).append(what if holds else f"MISMATCH {what}")
    return holds


def expect_hash(report: VerifyReport, path: Path, recorded: str | None, what: str) -> bool:
    """Whether ``path`` exists and has the ``recorded`` SHA-256; the report names the file."""
    if not path.is_file():
        report.problems.append(f"{path}: {what} is missing")
        return False
    digest = sha256_file(path)
    if digest != recorded:
        report.problems.append(
            f"{path}: SHA-256 {digest} does not match the recorded {recorded} ({what})"
        )
        return False
    report.checked.append(f"{path}: SHA-256 matches ({what})")
    return True


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object read from ``path``."""
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


__all__ = [
    "CERTIFICATE_FILE",
    "CERTIFICATE_HTML",
    "CHECK_Z",
    "FORMAT",
    "RequestForget",
    "VerifyReport",
    "audit_numbers",
    "certificate_html",
    "certificate_report",
    "certificate_schema",
    "compare",
    "expect",
    "expect_hash",
    "measure",
    "read_json",
    "validate_certificate",
]
