"""The bench table: mean ± sample std over seeds, x retrain per seed, three renderings."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import pytest

from conun.bench.tables import (
    Summary,
    aggregate,
    format_csv,
    format_latex,
    format_markdown,
    latex_escape,
    write_tables,
)


def cell(
    seed: int, request: str, method: str, seconds: float, **metrics: float | None
) -> dict[str, Any]:
    scenario = "class" if request.startswith("class") else "sample"
    return {
        "seed": seed,
        "bench": {"request": request},
        "runs": [
            {
                "scenario": scenario,
                "method": method,
                "seconds": seconds,
                "metrics": {"test_acc": 0.9, **metrics},
            }
        ],
    }


CELLS = [
    cell(0, "class5", "retrain", 10.0, forget_train_acc=0.0, forget_test_acc=0.0),
    cell(0, "class5", "neggrad_plus", 1.0, forget_train_acc=0.1, forget_test_acc=0.2),
    cell(1, "class5", "retrain", 20.0, forget_train_acc=0.0, forget_test_acc=0.0),
    cell(1, "class5", "neggrad_plus", 4.0, forget_train_acc=0.3, forget_test_acc=0.4),
    cell(0, "samples500", "neggrad_plus", 2.0, forget_train_acc=0.5, forget_test_acc=None),
]


def test_aggregate_means_stds_and_ratios() -> None:
    rows = aggregate(CELLS)
    assert [(r.request, r.method, r.seeds) for r in rows] == [
        ("class5", "retrain", [0, 1]),
        ("class5", "neggrad_plus", [0, 1]),
        ("samples500", "neggrad_plus", [0]),
    ]
    method = rows[1].values
    assert method["forget_train_acc"].mean == pytest.approx(0.2)
    assert method["forget_train_acc"].std == pytest.approx(math.sqrt(0.02))  # n - 1
    assert method["seconds"].mean == pytest.approx(2.5)
    # per seed 1/10 and 4/20, then the mean: not 2.5 / 15
    assert method["x_retrain"].mean == pytest.approx(0.15)
    assert method["x_retrain"].std == pytest.approx(math.sqrt(0.005))
    assert rows[0].values["x_retrain"] == Summary(1.0, 0.0, 2)
    single = rows[2].values
    assert single["forget_train_acc"] == Summary(0.5, None, 1)
    assert single["forget_test_acc"] == Summary(None, None, 0)
    assert single["x_retrain"].mean is None  # no retrain cell for that request


def test_markdown_csv_latex() -> None:
    rows = aggregate(CELLS)
    markdown = format_markdown(rows, title="t")
    assert "| class5 | class | neggrad_plus | 2 | 20.00 ± 14.14 | 30.00 ± 14.14 |" in markdown
    assert "| samples500 | sample | neggrad_plus | 1 | 50.00 | – |" in markdown
    assert "MIA" not in markdown  # no audited cell, no audit columns

    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert len(parsed) == 3
    assert parsed[1]["method"] == "neggrad_plus" and parsed[1]["seeds"] == "0 1"
    assert float(parsed[1]["x_retrain_mean"]) == pytest.approx(0.15)
    assert parsed[2]["forget_test_acc_mean"] == "" and parsed[2]["forget_train_acc_std"] == ""

    latex = format_latex(rows, caption="a_b")
    assert r"\caption{a\_b." in latex and r"\toprule" in latex and r"\bottomrule" in latex
    assert r"class5 & neggrad\_plus & $20.00 \pm 14.14$" in latex
    assert latex.count(r"\midrule") == 2  # after the header and between the two requests
    assert latex_escape("50% & #1_x") == r"50\% \& \#1\_x"


def test_audit_columns_appear_when_audited(tmp_path: Path) -> None:
    audited = [
        *CELLS,
        cell(0, "samples500", "retrain", 8.0, forget_train_acc=0.4, mia_efficacy=0.25),
    ]
    rows = aggregate(audited)
    paths = write_tables(rows, tmp_path, title="audited")
    assert {path.name for path in paths.values()} == {"table.md", "table.csv", "table.tex"}
    assert "MIA-efficacy" in paths["markdown"].read_text()
    assert "mia_efficacy_mean" in paths["csv"].read_text()
    # the request's retrain cell now gives its method a ratio: 2 / 8
    assert rows[2].values["x_retrain"].mean == pytest.approx(0.25)


def test_a_cell_without_its_request_is_rejected() -> None:
    broken = cell(0, "class5", "retrain", 1.0)
    del broken["bench"]
    with pytest.raises(ValueError, match="bench.request"):
        aggregate([broken])
