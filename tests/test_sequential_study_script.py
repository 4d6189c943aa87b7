"""experiments/sequential_study.py (issue #16's sequential study) on digits with tiny sizes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from conun.config import TrainConfig
from conun.workflows.training import train_original
from experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def study() -> ModuleType:
    """The script as a module (experiments/ is not a package)."""
    return load_experiment("sequential_study")


def test_sequential_study_on_digits(
    study: ModuleType,
    make_digits_config: Callable[..., TrainConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A short recipe (the study retrains it twice): the test checks the bookkeeping.
    original = tmp_path / "original"
    train_original(make_digits_config(epochs=5), original, quiet=True)
    out = tmp_path / "out"
    argv = ["--dataset", "digits", "--original", str(original), "--out", str(out)]
    argv += ["--work", str(tmp_path / "work"), "--sample-requests", "3", "--sample-size", "10"]
    argv += ["--class-requests", "2"]
    study.main(argv)

    state = json.loads((out / "rows.json").read_text())
    rows = state["rows"]
    for name in ("README.md", "table.md", "bounds.json", "sequential.png", "sequential.pdf"):
        assert (out / name).is_file(), name
    models = [(r["chain"], r["model"], r["step"]) for r in rows]
    assert models == [
        ("sample", "original", 0),
        *(("sample", "ledger", step) for step in (1, 2, 3)),
        ("sample", "retrain", 3),
        ("sample", "union", 3),
        ("class", "original", 0),
        *(("class", "ledger", step) for step in (1, 2)),
        ("class", "retrain", 2),
        ("class", "union", 2),
    ]
    # Per step, the forget accuracy of every request so far; the requests are disjoint.
    sample_steps = [r for r in rows if r["chain"] == "sample" and r["model"] == "ledger"]
    assert [len(r["requests"]) for r in sample_steps] == [1, 2, 3]
    retrain = next(r for r in rows if r["model"] == "retrain" and r["chain"] == "class")
    # Retraining never saw the forgotten classes; the ledger's last version forgot them too.
    assert all(r["forget_test_acc"] == 0.0 for r in retrain["requests"])
    last_class = [r for r in rows if r["chain"] == "class" and r["model"] == "ledger"][-1]
    assert all(r["forget_train_acc"] <= 0.1 for r in last_class["requests"])
    assert all(r["seconds"] > 0 for r in rows if r["model"] != "original")

    # The bounds are computed from the rows: README and bounds.json agree with them, and a
    # changed row changes the verdict when the outputs are rebuilt from rows.json.
    found = json.loads((out / "bounds.json").read_text())
    assert found == study.bounds(rows)
    assert len(found) == 3 + 1 + 1 + 2 + 1 + 1  # per request, test, time; per class, test, time
    readme = (out / "README.md").read_text()
    assert state["command"] in readme and "Machine:" in readme
    sample_test = next(b for b in found if b["chain"] == "sample" and "test" in b["bound"])
    assert sample_test["value"] == pytest.approx(
        abs(sample_steps[-1]["test_acc"] - rows[4]["test_acc"])
    )
    sample_steps[-1]["test_acc"] = rows[4]["test_acc"] + 0.5  # far from retrain's
    (out / "rows.json").write_text(json.dumps(state))
    monkeypatch.setattr(study, "figure", lambda rows, out: None)  # drawn above already
    study.main(["--report-only", "--out", str(out)])
    rebuilt = json.loads((out / "bounds.json").read_text())
    changed = next(b for b in rebuilt if b["chain"] == "sample" and "test" in b["bound"])
    assert changed["value"] == pytest.approx(0.5) and not changed["holds"]
    assert "SOME BOUNDS FAIL" in (out / "README.md").read_text()


def test_bad_arguments_are_refused_before_any_work(
    study: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        study.parse_args(
            ["--original", str(tmp_path), "--sample-requests", "0", "--class-requests", "0"]
        )
    assert "nothing to study" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.parse_args(["--original", str(tmp_path), "--report-only", "--out", str(tmp_path)])
    assert "needs" in capsys.readouterr().err
