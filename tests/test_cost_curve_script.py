"""experiments/cost_curve.py (issue #14's cost curves) on digits with tiny sizes and recipe."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def cost_curve() -> ModuleType:
    """The script as a module (experiments/ is not a package)."""
    return load_experiment("cost_curve")


def test_fit_slope_recovers_the_exponent_of_a_power_law(cost_curve: ModuleType) -> None:
    sizes = [100, 300, 1000, 3000, 6000]
    assert cost_curve.fit_slope(sizes, [2.5 * s**0.5 for s in sizes]) == pytest.approx(0.5)
    assert cost_curve.fit_slope(sizes, [7.0] * len(sizes)) == pytest.approx(0.0, abs=1e-12)
    assert cost_curve.fit_slope([10, 20], [3.0, 1.5]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="two distinct sizes"):
        cost_curve.fit_slope([100, 100], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        cost_curve.fit_slope([100, 200], [0.0, 2.0])


def test_retrain_is_not_a_method_to_ask_for(
    cost_curve: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cost_curve.parse_args(["--methods", "contrastive", "retrain"])
    assert "retrain always runs" in capsys.readouterr().err


def _point(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["axis"], row["request"], row["train_size"])


def test_cost_curve_on_digits(cost_curve: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--dataset", "digits", "--out", str(out), "--work", str(tmp_path / "work")]
    argv += ["--forget-sizes", "20", "40", "--forget-class", "5", "--fixed-forget", "20"]
    argv += ["--retain-sizes", "600", "1200", "--methods", "contrastive", "neggrad"]
    argv += ["--train-set", "epochs=2"]  # a tiny recipe: the test measures bookkeeping
    cost_curve.main(argv)

    for name in ("rows.json", "table.md", "README.md", "cost-curve.png", "cost-curve.pdf"):
        assert (out / name).stat().st_size > 0, name
    state = json.loads((out / "rows.json").read_text())
    rows = state["rows"]
    points = {_point(row) for row in rows}
    assert points == {
        ("forget", "samples20", None),
        ("forget", "samples40", None),
        ("forget", "class5", None),
        ("retain", "samples20", 600),
        ("retain", "samples20", 1200),
    }
    for point in points:  # every method once at every point
        methods = sorted(row["method"] for row in rows if _point(row) == point)
        assert methods == ["contrastive", "neggrad", "retrain"], point
    retrain = {_point(r): r["seconds"] for r in rows if r["method"] == "retrain"}
    for row in rows:
        assert row["seconds"] > 0
        assert row["ratio_to_retrain"] == pytest.approx(row["seconds"] / retrain[_point(row)])
        counts = row["forget_size"] + row["retain_size"] + row["validation_size"]
        assert counts == row["train_total"]
    # The class point forgets the whole class (its non-validation samples): > the sample sizes.
    assert all(r["forget_size"] > 100 for r in rows if r["scenario"] == "class")
    assert {r["train_total"] for r in rows if r["train_size"] is not None} == {600, 1200}

    for method in ("retrain", "contrastive", "neggrad"):
        for axis, size_key in (("forget", "forget_size"), ("retain", "retain_size")):
            key = (method, axis, "sample")  # the class point is not in the fit
            chosen = [r for r in rows if (r["method"], r["axis"], r["scenario"]) == key]
            x = np.log([r[size_key] for r in chosen])
            y = np.log([r["seconds"] for r in chosen])
            expected = float(np.polyfit(x, y, 1)[0])
            assert state["slopes"][method][axis] == pytest.approx(expected), (method, axis)
    table = (out / "table.md").read_text()
    small = [r for r in rows if r["method"] == "contrastive" and r["train_size"] == 600]
    contrastive_ratio = statistics.median(r["ratio_to_retrain"] for r in small)
    assert f"{contrastive_ratio:.4f}" in table
    assert "Acceptance (issue #14)" in (out / "README.md").read_text()

    # A rerun of the same command resumes: nothing runs again, nothing is added.
    cost_curve.main(argv)
    assert json.loads((out / "rows.json").read_text())["rows"] == rows
