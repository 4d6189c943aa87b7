"""Tests of the results.json figures of conun.viz: forgetting curve, time per method, trade-off.

The results are hand-built dictionaries (valid against the shipped schema), so no training runs;
each figure is checked for what it plots (read off the Axes before saving) and for its files.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from conun.viz import (
    UTILITY_METRICS,
    FigurePaths,
    collect_panels,
    forgetting_curve,
    forgetting_curve_figure,
    read_results,
    request_label,
    save_figure,
    time_per_method,
    time_per_method_figure,
    tradeoff,
    tradeoff_figure,
)

VIZ_SOURCE = Path(__file__).resolve().parents[2] / "src" / "conun" / "viz"

CONTRASTIVE_CLASS_HISTORY = [
    {"batch": 0, "pass": 0, "forget_train_acc": 1.0, "held_out_acc": 0.95},
    {"batch": 3, "pass": 1, "forget_train_acc": 0.6, "held_out_acc": 0.9},
    {"batch": 6, "pass": 2, "forget_train_acc": 0.0, "held_out_acc": 0.92},
]
NEGGRAD_CLASS_HISTORY = [
    {"batch": 0, "pass": 0, "forget_train_acc": 1.0, "held_out_acc": 0.95},
    {"batch": 5, "pass": 1, "forget_train_acc": 0.3, "held_out_acc": 0.7},
]
CONTRASTIVE_SAMPLE_HISTORY = [
    {"batch": 0, "pass": 0, "forget_train_acc": 1.0, "held_out_acc": 0.97},
    {"batch": 2, "pass": 1, "forget_train_acc": 0.95, "held_out_acc": 0.97},
    {"batch": 4, "pass": 2, "forget_train_acc": 0.9, "held_out_acc": 0.96},
]


def _run(
    scenario: str,
    method: str,
    seconds: float,
    forget_train_acc: float,
    test_acc: float,
    *,
    retain_test_acc: float | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    forget = {"classes": [5]} if scenario == "class" else {"num_samples": 65, "seed": 0}
    return {
        "scenario": scenario,
        "forget": forget,
        "method": method,
        "seconds": seconds,
        "forget_batches": history[-1]["batch"] if history else None,
        "passes": None,
        "metrics": {
            "forget_train_acc": forget_train_acc,
            "forget_test_acc": forget_train_acc if scenario == "class" else None,
            "retain_train_acc": 1.0,
            "retain_test_acc": retain_test_acc,
            "test_acc": test_acc,
            "mia_forget_member_rate": None,
            "mia_retain_member_rate": None,
        },
        "history": history or [],
    }


def make_results(seed: int = 0) -> dict[str, Any]:
    """A results.json document: class and sample scenarios, loop-based and one-shot methods."""
    return {
        "conun_version": "0.1.0",
        "dataset": "digits",
        "model": "small_cnn",
        "seed": seed,
        "device": "cpu",
        "runs": [
            _run("class", "original", 3.5, 1.0, 0.99, retain_test_acc=0.988),
            _run("class", "retrain", 3.0, 0.0, 0.88, retain_test_acc=0.985),
            _run(
                "class",
                "contrastive",
                0.5,
                0.0,
                0.886,
                retain_test_acc=0.987,
                history=CONTRASTIVE_CLASS_HISTORY,
            ),
            _run(
                "class",
                "neggrad",
                0.2,
                0.3,
                0.8,
                retain_test_acc=0.9,
                history=NEGGRAD_CLASS_HISTORY,
            ),
            _run("class", "fisher", 1.2, 0.1, 0.7, retain_test_acc=0.8),
            _run("sample", "original", 3.5, 1.0, 0.99),
            _run("sample", "retrain", 3.2, 0.98, 0.986),
            _run("sample", "contrastive", 0.6, 0.9, 0.99, history=CONTRASTIVE_SAMPLE_HISTORY),
        ],
    }


@pytest.fixture
def results() -> dict[str, Any]:
    document = make_results()
    jsonschema.validate(document, read_schema())
    return document


def read_schema() -> dict[str, Any]:
    path = VIZ_SOURCE.parent / "schema" / "results.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def assert_written(paths: FigurePaths) -> None:
    assert paths.png.suffix == ".png" and paths.pdf.suffix == ".pdf"
    assert paths.png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert paths.pdf.read_bytes().startswith(b"%PDF")
    assert paths.png.stat().st_size > 1000 and paths.pdf.stat().st_size > 1000


def lines_by_label(figure: Figure, panel: int) -> dict[str, Any]:
    return {str(line.get_label()): line for line in figure.axes[panel].get_lines()}


# --- reading results ----------------------------------------------------------------------------


def test_read_results_from_dict_file_and_directory(results: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    from_dict = read_results(results)
    from_file = read_results(tmp_path / "results.json")
    from_dir = read_results(str(tmp_path))
    assert from_dict == from_file == from_dir == [results]
    assert len(read_results([results, tmp_path])) == 2


def test_read_results_rejects_bad_input(results: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"results\.json"):
        read_results(tmp_path)
    broken = copy.deepcopy(results)
    del broken["runs"][0]["seconds"]
    with pytest.raises(jsonschema.ValidationError):
        read_results(broken)
    with pytest.raises(ValueError, match="no results"):
        read_results([])


def test_panels_group_runs_by_request(results: dict[str, Any]) -> None:
    other_class = copy.deepcopy(results)
    for run in other_class["runs"]:
        if run["scenario"] == "class":
            run["forget"] = {"classes": [0]}
    panels = collect_panels([results, make_results(seed=1), other_class])
    assert [(p.scenario, p.request) for p in panels] == [
        ("class", "class 5"),
        ("sample", "65 samples"),  # the request's seed is not part of the panel key
        ("class", "class 0"),
    ]
    assert len(panels[0].runs) == 10 and panels[0].sources == (0,) * 5 + (1,) * 5
    assert request_label("class", {"classes": [0, 5]}) == "classes 0, 5"
    assert request_label("sample", {"ids_file": "/x/ids.txt"}) == "ids from ids.txt"
    assert request_label("none", None) == "none"


# --- forgetting curve ---------------------------------------------------------------------------


def test_forgetting_curve_plots_each_history(results: dict[str, Any]) -> None:
    figure = forgetting_curve_figure(results)
    assert [ax.get_title() for ax in figure.axes] == [
        "class scenario: class 5",
        "sample scenario: 65 samples",
    ]
    class_lines = lines_by_label(figure, 0)
    assert set(class_lines) == {"contrastive", "neggrad", "fisher", "retrain"}
    for method, history in (
        ("contrastive", CONTRASTIVE_CLASS_HISTORY),
        ("neggrad", NEGGRAD_CLASS_HISTORY),
    ):
        x, y = class_lines[method].get_data()
        assert list(x) == [h["batch"] for h in history]
        assert list(y) == [h["forget_train_acc"] for h in history]
    assert list(class_lines["retrain"].get_ydata()) == [0.0, 0.0]  # retrain's forget accuracy
    sample_lines = lines_by_label(figure, 1)
    assert list(sample_lines["contrastive"].get_ydata()) == [
        h["forget_train_acc"] for h in CONTRASTIVE_SAMPLE_HISTORY
    ]
    assert list(sample_lines["retrain"].get_ydata()) == [0.98, 0.98]
    # one method keeps its colour across panels
    assert class_lines["contrastive"].get_color() == sample_lines["contrastive"].get_color()


def test_forgetting_curve_held_out_and_seeds(results: dict[str, Any]) -> None:
    figure = forgetting_curve_figure([results, make_results(seed=1)], show_held_out=True)
    class_lines = figure.axes[0].get_lines()
    held_out = lines_by_label(figure, 0)["contrastive (held out)"]
    assert list(held_out.get_ydata()) == [h["held_out_acc"] for h in CONTRASTIVE_CLASS_HISTORY]
    # two seeds x two methods x (forget + held out) + two fisher points (one-shot: no held-out
    # curve) + the retrain line; only seed 0 labelled
    assert len(class_lines) == 11
    assert sum(line.get_label() == "contrastive" for line in class_lines) == 1


def is_marker_only(line: Any) -> bool:
    return line.get_linestyle() == "None" and line.get_marker() not in ("None", "", None)


def test_one_shot_runs_are_single_markers(results: dict[str, Any]) -> None:
    """fisher (no history, forget_batches null) is one marker at batch 0 and its final forget
    accuracy, not a line; so are a method that never steps on a forget batch (finetune: every
    check at batch 0) and a run with a single check."""
    finetune_history = [
        {"batch": 0, "pass": p, "forget_train_acc": acc, "held_out_acc": 0.9}
        for p, acc in enumerate((1.0, 0.7, 0.4))
    ]
    finetune = _run("class", "finetune", 2.0, 0.35, 0.9, history=finetune_history)
    finetune["forget_batches"] = None  # it passes over the retain set only
    single = _run("class", "scrub", 1.0, 0.2, 0.9, history=[{"batch": 4, "forget_train_acc": 0.25}])
    results["runs"] += [finetune, single]
    figure = forgetting_curve_figure(results, show_held_out=True)
    lines = lines_by_label(figure, 0)
    for method, point in (("fisher", (0, 0.1)), ("finetune", (0, 0.35)), ("scrub", (4, 0.2))):
        line = lines[method]
        assert is_marker_only(line), method
        x, y = line.get_data()
        assert (list(x), list(y)) == ([point[0]], [point[1]]), method
        assert f"{method} (held out)" not in lines
    for method in ("contrastive", "neggrad"):
        assert not is_marker_only(lines[method])
    # the figure legend shows the marker, not a line, for a one-shot method
    legend = {
        text.get_text(): handle
        for text, handle in zip(
            figure.legends[0].get_texts(), figure.legends[0].legend_handles, strict=True
        )
    }
    assert is_marker_only(legend["fisher"]) and not is_marker_only(legend["contrastive"])
    assert list(legend)[-1] == "retrain"  # the reference comes after the methods


def test_forgetting_curve_without_histories_draws_points(results: dict[str, Any]) -> None:
    for run in results["runs"]:
        run["history"] = []
    figure = forgetting_curve_figure(results)
    lines = lines_by_label(figure, 0)
    assert all(is_marker_only(lines[m]) for m in ("contrastive", "neggrad", "fisher"))
    assert list(lines["contrastive"].get_xdata()) == [6]  # its forget_batches


def test_forgetting_curve_needs_an_unlearning_run(results: dict[str, Any]) -> None:
    results["runs"] = [r for r in results["runs"] if r["method"] in ("original", "retrain")]
    with pytest.raises(ValueError, match="unlearning run"):
        forgetting_curve_figure(results)


def test_forgetting_curve_writes_png_and_pdf(results: dict[str, Any], tmp_path: Path) -> None:
    paths = forgetting_curve(results, tmp_path / "figures" / "curve")
    assert paths == FigurePaths(
        png=tmp_path / "figures" / "curve.png", pdf=tmp_path / "figures" / "curve.pdf"
    )
    assert_written(paths)
    again = forgetting_curve(results, tmp_path / "again")
    assert again.png.read_bytes() == paths.png.read_bytes()  # deterministic files
    assert again.pdf.read_bytes() == paths.pdf.read_bytes()


# --- time per method ----------------------------------------------------------------------------


def bar_heights(figure: Figure, panel: int) -> dict[str, float]:
    return {
        str(container.get_label()): float(container.patches[0].get_height())
        for container in figure.axes[panel].containers
        if isinstance(container, BarContainer)
    }


def test_time_per_method_bars_are_seconds(results: dict[str, Any]) -> None:
    figure = time_per_method_figure(results)
    assert bar_heights(figure, 0) == {"contrastive": 0.5, "neggrad": 0.2, "fisher": 1.2}
    assert bar_heights(figure, 1) == {"contrastive": 0.6}
    for panel, retrain in ((0, 3.0), (1, 3.2)):
        ax = figure.axes[panel]
        assert ax.get_yscale() == "log"
        assert list(lines_by_label(figure, panel)["retrain"].get_ydata()) == [retrain, retrain]
    ratios = [text.get_text() for text in figure.axes[0].texts]
    assert "×0.17" in ratios  # 0.5 s of retrain's 3 s

    with_original = time_per_method_figure(results, include_original=True)
    assert bar_heights(with_original, 0)["original"] == 3.5


def test_time_per_method_mean_over_seeds(results: dict[str, Any]) -> None:
    slower = make_results(seed=1)
    for run in slower["runs"]:
        run["seconds"] *= 3
    figure = time_per_method_figure([results, slower])
    assert bar_heights(figure, 0)["contrastive"] == pytest.approx(1.0)  # mean of 0.5 and 1.5
    assert list(lines_by_label(figure, 0)["retrain"].get_ydata()) == pytest.approx([6.0, 6.0])


def test_time_per_method_writes_png_and_pdf(results: dict[str, Any], tmp_path: Path) -> None:
    assert_written(time_per_method(results, tmp_path / "time"))


def test_time_per_method_needs_an_unlearning_run(results: dict[str, Any]) -> None:
    results["runs"] = [r for r in results["runs"] if r["method"] in ("original", "retrain")]
    with pytest.raises(ValueError, match="unlearning run"):
        time_per_method_figure(results)


# --- trade-off ----------------------------------------------------------------------------------


def scatter_points(figure: Figure, panel: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        str(c.get_label()): (np.asarray(c.get_offsets()), np.asarray(c.get_array()))
        for c in figure.axes[panel].collections
    }


def test_tradeoff_points_are_gap_utility_and_seconds(results: dict[str, Any]) -> None:
    figure = tradeoff_figure(results)
    class_points = scatter_points(figure, 0)
    assert list(class_points) == ["original", "retrain", "contrastive", "neggrad", "fisher"]
    # class request: utility is the retained classes' test accuracy, not the whole test set's
    # (which holds the forgotten class and so falls when forgetting works)
    assert figure.axes[0].get_ylabel() == UTILITY_METRICS["retain_test_acc"]
    expected = {  # (|forget_train_acc - 0.0|, retain_test_acc), seconds
        "original": ((1.0, 0.988), 3.5),
        "retrain": ((0.0, 0.985), 3.0),
        "contrastive": ((0.0, 0.987), 0.5),
        "neggrad": ((0.3, 0.9), 0.2),
        "fisher": ((0.1, 0.8), 1.2),
    }
    for method, (offset, seconds) in expected.items():
        offsets, colours = class_points[method]
        np.testing.assert_allclose(offsets, [offset])
        np.testing.assert_allclose(colours, [seconds])
    sample_points = scatter_points(figure, 1)
    np.testing.assert_allclose(sample_points["contrastive"][0], [[0.08, 0.99]])  # test_acc
    assert figure.axes[1].get_ylabel() == UTILITY_METRICS["test_acc"]
    colorbar_axes = figure.axes[-1]
    assert colorbar_axes.get_ylabel() == "seconds (log scale)"


def test_tradeoff_utility_can_be_chosen_for_every_panel(results: dict[str, Any]) -> None:
    figure = tradeoff_figure(results, utility="test_acc")
    np.testing.assert_allclose(scatter_points(figure, 0)["fisher"][0], [[0.1, 0.7]])
    np.testing.assert_allclose(scatter_points(figure, 1)["contrastive"][0], [[0.08, 0.99]])
    assert {ax.get_ylabel() for ax in figure.axes[:2]} == {UTILITY_METRICS["test_acc"]}


def test_tradeoff_retain_test_acc_leaves_out_the_sample_panel(results: dict[str, Any]) -> None:
    figure = tradeoff_figure(results, utility="retain_test_acc")
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["class scenario: class 5"]
    np.testing.assert_allclose(scatter_points(figure, 0)["contrastive"][0], [[0.0, 0.987]])


def test_tradeoff_compares_each_seed_with_its_own_retrain(results: dict[str, Any]) -> None:
    other = make_results(seed=1)
    for run in other["runs"]:
        if run["scenario"] == "sample" and run["method"] == "retrain":
            run["metrics"]["forget_train_acc"] = 0.94
    figure = tradeoff_figure([results, other])
    offsets, _ = scatter_points(figure, 1)["contrastive"]
    np.testing.assert_allclose(offsets[:, 0], [0.08, 0.04])  # 0.9 vs 0.98, then vs 0.94
    retrain_offsets, _ = scatter_points(figure, 1)["retrain"]
    np.testing.assert_allclose(retrain_offsets[:, 0], [0.0, 0.0])


def test_tradeoff_rejects_bad_input(results: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="test_acc"):
        tradeoff_figure(results, utility="accuracy")
    results["runs"] = [r for r in results["runs"] if r["method"] != "retrain"]
    with pytest.raises(ValueError, match="retrain"):
        tradeoff_figure(results)


def test_tradeoff_writes_png_and_pdf(results: dict[str, Any], tmp_path: Path) -> None:
    assert_written(tradeoff(results, tmp_path / "tradeoff"))


# --- legends and markers -----------------------------------------------------------------------


def overlaps(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("build", [forgetting_curve_figure, tradeoff_figure])
def test_legends_sit_outside_every_panel(results: dict[str, Any], build: Any) -> None:
    """One figure legend, drawn clear of every panel's data area (inside an Axes it covered
    points of the trade-off)."""
    figure = build([results, make_results(seed=1)])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 2
    assert all(ax.get_legend() is None for ax in figure.axes)
    (legend,) = figure.legends
    box = legend.get_window_extent(renderer)
    for ax in panels:
        assert not overlaps(box, ax.get_window_extent(renderer)), ax.get_title()
    # inside the canvas, not cut off
    canvas = figure.bbox
    assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 + 1
    assert canvas.y0 <= box.y0 and box.y1 <= canvas.y1 + 1


def test_tradeoff_markers_are_distinct_for_many_methods(results: dict[str, Any]) -> None:
    template = next(r for r in results["runs"] if r["method"] == "fisher")
    for index in range(13):
        run = copy.deepcopy(template)
        run["method"] = f"method_{index}"
        results["runs"].append(run)
    figure = tradeoff_figure(results)
    handles = figure.legends[0].legend_handles
    assert len(handles) == 18  # original, retrain, contrastive, neggrad, fisher and 13 more
    shapes = {str(handle.get_marker()) for handle in handles}  # type: ignore[union-attr]
    assert len(shapes) == len(handles)


# --- saving and layering ------------------------------------------------------------------------


def test_save_figure_wants_a_stem(results: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extension"):
        save_figure(forgetting_curve_figure(results), tmp_path / "curve.png")


def test_viz_never_imports_the_engine() -> None:
    """By design, viz draws from saved results and never imports the engine, nor the packages
    that do (api, evaluation, methods, cli)."""
    forbidden = ("conun.engine", "conun.api", "conun.evaluation", "conun.methods", "conun.cli")
    for source in sorted(VIZ_SOURCE.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(forbidden), f"{source.name} imports {name}"
