"""The privacy audit through the command line: `unlearn --audit`, `evaluate --audit` and
`conun audit --reference`, on digits; every number lands in a schema-valid results.json."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from conun.cli import main
from conun.evaluation.distances import DISTANCE_COLUMNS
from conun.evaluation.privacy import AUDIT_COLUMNS
from conun.evaluation.results import validate_results
from conun.workflows.training import TrainedModel


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def read_runs(directory: Path) -> dict[str, dict[str, float]]:
    data = json.loads((directory / "results.json").read_text())
    validate_results(data)
    return {run["method"]: run["metrics"] for run in data["runs"]}


def test_unlearn_with_reference_and_audit_compares_every_run_with_retrain(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    original_dir, _ = digits_run
    out = tmp_path / "class5"
    code, output = invoke(
        "unlearn", "--checkpoint", str(original_dir), "--forget-class", "5",
        "--with-reference", "--audit", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, output
    runs = read_runs(out)
    assert set(runs) == {"original", "retrain", "contrastive"}
    for metrics in runs.values():
        assert set(AUDIT_COLUMNS) <= set(metrics)
    for method in ("original", "contrastive"):
        assert {"js_divergence", "avg_gap", "tow"} <= set(runs[method])
    # The original still knows class 5 (its samples look like members); the retrained model and
    # contrastive unlearning do not, and contrastive sits far closer to retrain than the original.
    assert runs["original"]["mia_forget_member_rate"] > runs["retrain"]["mia_forget_member_rate"]
    assert runs["contrastive"]["tow"] > runs["original"]["tow"]
    assert runs["contrastive"]["avg_gap"] < runs["original"]["avg_gap"]
    assert "mia_forget_member_rate" in output and "good direction" in output


def test_audit_command_with_reference_and_evaluate_audit(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    original_dir, _ = digits_run
    retrained = tmp_path / "retrain"
    code, output = invoke(
        "unlearn", "--checkpoint", str(original_dir), "--method", "retrain",
        "--forget-samples", "90", "--out", str(retrained), "--quiet",
    )  # fmt: skip
    assert code == 0, output
    audited = tmp_path / "audit"
    code, output = invoke(
        "audit", "--checkpoint", str(original_dir), "--forget-samples", "90",
        "--reference", str(retrained), "--out", str(audited),
    )  # fmt: skip
    assert code == 0, output
    runs = read_runs(audited)
    assert list(runs) == ["retrain", "original"]
    assert set(DISTANCE_COLUMNS) <= set(runs["original"])
    assert runs["original"]["weight_distance"] > 0
    for key, (_meaning, direction) in AUDIT_COLUMNS.items():
        assert key in output and direction.split(";")[0] in output, key

    # evaluate --audit on the retrained checkpoint reuses its own split (written by unlearn).
    evaluated = tmp_path / "evaluated"
    code, output = invoke(
        "evaluate", "--checkpoint", str(retrained), "--audit", "--out", str(evaluated)
    )
    assert code == 0, output
    assert read_runs(evaluated)["retrain"]["mia_forget_member_rate"] is not None


def test_audit_without_a_forget_request_is_refused_before_writing(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    original_dir, _ = digits_run
    out = tmp_path / "never"
    code, output = invoke("audit", "--checkpoint", str(original_dir), "--out", str(out))
    assert code == 2 and "needs a forget request" in output
    assert not out.exists()


def test_audit_table_skips_unaudited_runs_names_scenarios_and_escapes_pipes() -> None:
    from conun.evaluation.results import format_audit_table

    def run(method: str, scenario: str, **metrics: float | None) -> dict[str, object]:
        return {"method": method, "scenario": scenario, "metrics": metrics}

    # Audit keys present but null (what an unaudited demo run holds): no table at all.
    assert format_audit_table({"runs": [run("contrastive", "class", mia_efficacy=None)]}) == ""
    table = format_audit_table(
        {
            "runs": [
                run("retrain", "class", mia_efficacy=0.9, avg_gap=0.0),
                run("contrastive", "sample", mia_efficacy=0.4, avg_gap=0.1),
                run("finetune", "sample", test_acc=0.9),  # not audited: no column
            ]
        }
    )
    lines = table.splitlines()
    assert lines[2].startswith("| number | retrain (class) | contrastive (sample) | meaning |")
    avg_gap = next(line for line in lines if line.startswith("| avg_gap |"))
    # The meaning holds |Δ|: escaped, so the row has exactly as many cells as the header.
    assert "\\|Δ\\|" in avg_gap
    assert avg_gap.replace("\\|", "").count("|") == lines[2].count("|")
