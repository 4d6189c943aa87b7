"""``conun report``: the HTML page and its Markdown twin from a demo run and a smoke bench.

The HTML is parsed (tables, images, every reference to another resource) and rendered in
headless Chromium, which must show every embedded image. Chromium is required (`make test`
installs Debian's ``chromium`` package); a missing browser fails the test, it is not skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conun.cli import main
from conun.evaluation.distances import DISTANCE_COLUMNS
from conun.evaluation.privacy import AUDIT_COLUMNS
from conun.evaluation.results import format_table
from conun.report import (
    FIGURES,
    ReportPaths,
    ReportSourceError,
    Table,
    blocks_from_markdown,
    build_report,
    detect_source,
    write_report,
)

FIGURE_NAMES = [spec.name for spec in FIGURES]


class _Page(HTMLParser):
    """Collects the tables (rows of cell texts), the <img> sources and every attribute that
    could fetch something (src, href, srcset, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.references: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "background"):
                self.references.append((tag, name, value or ""))
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _rows(page: _Page, first_header: str) -> list[list[str]]:
    """The body rows of the table whose first heading is ``first_header``."""
    (table,) = [table for table in page.tables if table and table[0][0] == first_header]
    return table[1:]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_self_contained(paths: ReportPaths, *, extra: tuple[str, ...] = ()) -> list[bytes]:
    """The HTML fetches nothing: no scripts, stylesheets or links, every src a PNG data URI
    holding exactly the bytes of the PNG next to the Markdown (the report's figures, then
    ``extra`` ones). Returns the PNGs."""
    page = _parse(paths.html)
    text = paths.html.read_text(encoding="utf-8")
    assert not page.tags & {"script", "link", "iframe", "object", "embed", "base"}
    assert "url(" not in text and "@import" not in text
    assert not re.search(r"https?://", text)
    names = [*FIGURE_NAMES, *extra]
    assert len(page.images) == len(names)
    assert all(
        ref[1] == "src" and ref[2].startswith("data:image/png;base64,") for ref in page.references
    )
    pngs = [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in page.images]
    assert [p.name for p in paths.images] == [f"{paths.html.stem}-{name}.png" for name in names]
    for png, file in zip(pngs, paths.images, strict=True):
        assert file.read_bytes() == png
        assert _png_size(png)[0] > 100
    return pngs


def _check_markdown(paths: ReportPaths) -> str:
    """Every image the Markdown references is a file next to it."""
    text = paths.markdown.read_text(encoding="utf-8")
    targets = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert targets == [path.name for path in paths.images]
    assert all((paths.markdown.parent / target).is_file() for target in targets)
    return text


def test_demo_report(demo_dir: Path, demo_report: ReportPaths) -> None:
    assert detect_source(demo_dir) == "run"
    page = _parse(demo_report.html)
    rows = _rows(page, "scenario")
    assert [row[:2] for row in rows] == [
        [scenario, method]
        for scenario in ("class", "sample")
        for method in ("original", "retrain", "contrastive")
    ]
    # the numbers are results.md's (one formatter for both)
    data = json.loads((demo_dir / "results.json").read_text(encoding="utf-8"))
    expected = next(b for b in blocks_from_markdown(format_table(data)) if isinstance(b, Table))
    assert [tuple(row) for row in rows] == list(expected.rows)
    html = demo_report.html.read_text(encoding="utf-8")
    for text in ("digits", "small_cnn", "class 5", "65 samples", "original/checkpoint.safetensors"):
        assert text in html
    versions = _rows(page, "recorded by")
    assert versions[0][0] == "this report (now)" and versions[0][1] == "0.1.0"
    assert any(row[0].startswith("checkpoint original/") for row in versions)
    assert "No privacy audit" in html
    _check_self_contained(demo_report)

    markdown = _check_markdown(demo_report)
    assert "| class | contrastive |" in markdown and "| sample | retrain |" in markdown
    assert "## Results" in markdown and "## Versions" in markdown and "```yaml" in markdown


def test_bench_report(smoke_dir: Path, smoke_report: ReportPaths) -> None:
    assert detect_source(smoke_dir) == "bench"
    assert smoke_report.html == smoke_dir / "report.html"
    page = _parse(smoke_report.html)
    rows = _rows(page, "request")
    assert [row[:3] for row in rows] == [
        [request, scenario, method]
        for request, scenario in (("class5", "class"), ("fraction0.05", "sample"))
        for method in ("original", "retrain", "contrastive", "finetune")
    ]
    # the same numbers as the bench's own table.md
    table_md = (smoke_dir / "table.md").read_text(encoding="utf-8")
    (expected,) = [b for b in blocks_from_markdown(table_md) if isinstance(b, Table)]
    assert [tuple(row) for row in rows] == list(expected.rows)
    html = smoke_report.html.read_text(encoding="utf-8")
    assert f"conun bench smoke --seeds 0 --out {smoke_dir}" in html
    assert "audit: false" in html  # bench.yaml, verbatim
    _check_self_contained(smoke_report, extra=("embedding_projection",))
    markdown = _check_markdown(smoke_report)
    assert "| class5 | class | contrastive | 1 |" in markdown
    # The paper's Figure 1 from the cells' checkpoints: the class request, before and after.
    assert "Representation before and after unlearning (t-SNE)" in html
    assert "Seed 0, request class5." in html


def test_bench_report_without_weights_says_why_figure_1_is_missing(
    smoke_dir: Path, tmp_path: Path
) -> None:
    bench = _copy(smoke_dir, tmp_path / "bench")
    for checkpoint in bench.glob("cells/*/*/*/checkpoint.safetensors"):
        checkpoint.unlink()  # as in a clone: bench weights are not committed
    paths = write_report(bench)
    html = paths.html.read_text(encoding="utf-8")
    assert "Not drawn: no seed has its original&#x27;s and a method&#x27;s checkpoint" in html or (
        "Not drawn: no seed has its original's and a method's checkpoint" in html
    )
    assert len(paths.images) == 3


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "the `chromium` binary is not on PATH: these tests render the report in headless "
            "Chromium; install Debian's package (apt-get install -y chromium), as .ci/run does"
        )
    return found


_IMAGE_CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0);
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = "images=" + images.length + " loaded=" + loaded.length +
    " widths=" + images.map((img) => img.naturalWidth).join(",");
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.parametrize("which", ["demo", "bench"])
def test_report_renders_in_chromium(
    which: str,
    demo_report: ReportPaths,
    smoke_report: ReportPaths,
    tmp_path: Path,
) -> None:
    """Chromium loads the page with every image decoded at the PNG's own width."""
    paths = demo_report if which == "demo" else smoke_report
    browser = _chromium()
    html = paths.html.read_text(encoding="utf-8")
    assert html.count("</body>") == 1
    # The report itself has no script: a copy of it gets one that writes what it sees.
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _IMAGE_CHECK + "</body>"), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    marker = re.search(r'<pre id="image-check">([^<]*)</pre>', result.stdout)
    assert marker is not None, f"the page's load handler did not run:\n{result.stderr[-2000:]}"
    widths = ",".join(str(_png_size(p.read_bytes())[0]) for p in paths.images)
    # demo: forgetting curve, time per method, trade-off; bench: and the t-SNE of Figure 1
    count = 3 if which == "demo" else 4
    assert len(paths.images) == count
    assert marker.group(1) == f"images={count} loaded={count} widths={widths}"
    # the page's own content came through the browser's parser
    assert "<td>contrastive</td>" in result.stdout


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("report*"))
    return target


AUDIT_AND_DISTANCES = {**AUDIT_COLUMNS, **DISTANCE_COLUMNS}


def _audit_numbers(scale: float) -> dict[str, float]:
    return {
        key: round(scale * (index + 1) / 40, 4) for index, key in enumerate(AUDIT_AND_DISTANCES)
    }


def test_run_report_shows_audit_with_meaning_and_direction(demo_dir: Path, tmp_path: Path) -> None:
    run = _copy(demo_dir, tmp_path / "run")
    data: dict[str, Any] = json.loads((run / "results.json").read_text(encoding="utf-8"))
    for index, entry in enumerate(data["runs"][:3]):  # the class request only
        entry["metrics"].update(_audit_numbers(1 + index))
    (run / "results.json").write_text(json.dumps(data), encoding="utf-8")

    paths = write_report(run, tmp_path / "out" / "audited", figures=False)
    assert paths.images == ()
    page = _parse(paths.html)
    rows = _rows(page, "number")
    assert [row[0] for row in rows] == list(AUDIT_AND_DISTANCES)
    # some meanings hold "|" (avg_gap: "mean |Δ| to retrain ..."): kept whole, in their cell
    assert any("|" in meaning for meaning, _ in AUDIT_AND_DISTANCES.values())
    for row, (key, (meaning, direction)) in zip(rows, AUDIT_AND_DISTANCES.items(), strict=True):
        assert row[-2:] == [meaning, direction]
        assert row[1:4] == [f"{value:.4g}" for value in (_audit_numbers(s)[key] for s in (1, 2, 3))]
    (header,) = [t[0] for t in page.tables if t[0][0] == "number"]
    assert header == ["number", "original", "retrain", "contrastive", "meaning", "good direction"]
    markdown = paths.markdown.read_text(encoding="utf-8")
    (line,) = [line for line in markdown.splitlines() if line.startswith("| avg_gap |")]
    assert "mean \\|Δ\\| to retrain" in line
    assert len(re.findall(r"(?<!\\)\|", line)) == len(header) + 1
    html = paths.html.read_text(encoding="utf-8")
    assert "class scenario: class 5" in html and "No privacy audit" not in html
    assert "<figure" not in html and "Figures" not in html


def test_bench_report_averages_audit_over_seeds(smoke_dir: Path, tmp_path: Path) -> None:
    bench = _copy(smoke_dir, tmp_path / "bench")
    # a second seed of the class request, as another invocation with --seeds 0,1 would add
    for method in ("original", "retrain", "contrastive", "finetune"):
        source = bench / "cells" / "0" / "class5" / method
        shutil.copytree(source, bench / "cells" / "1" / "class5" / method)
        for seed, scale in (("0", 1.0), ("1", 3.0)):
            path = bench / "cells" / seed / "class5" / method / "results.json"
            data = json.loads(path.read_text(encoding="utf-8"))
            data["seed"] = int(seed)
            data["runs"][0]["metrics"]["mia_forget_member_rate"] = 0.1 * scale
            path.write_text(json.dumps(data), encoding="utf-8")
    # left out: bench.yaml records seed 0 only ...
    report = build_report(bench, figures=False)
    assert "4 cell(s) outside the grid" in str(report.blocks)
    # ... until it records both
    text = (bench / "bench.yaml").read_text(encoding="utf-8")
    (bench / "bench.yaml").write_text(text.replace("seeds:\n- 0\n", "seeds:\n- 0\n- 1\n"))
    paths = write_report(bench, figures=False)
    page = _parse(paths.html)
    (row,) = _rows(page, "number")
    assert row[0] == "mia_forget_member_rate"
    assert row[1:5] == ["0.2"] * 4  # mean of 0.1 and 0.3, every method
    assert row[-2:] == list(AUDIT_COLUMNS["mia_forget_member_rate"])
    assert "class5 (mean over 2 seed(s))" in paths.html.read_text(encoding="utf-8")
    assert [r[3] for r in _rows(page, "request")] == ["2"] * 4 + ["1"] * 4


def test_figures_the_results_cannot_support_are_explained(demo_dir: Path, tmp_path: Path) -> None:
    run = _copy(demo_dir, tmp_path / "run")
    stem = tmp_path / "out" / "r"
    stale = write_report(run, stem).images
    assert len(stale) == 3
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    data["runs"] = [entry for entry in data["runs"] if entry["method"] != "contrastive"]
    (run / "results.json").write_text(json.dumps(data), encoding="utf-8")
    paths = write_report(run, stem)
    assert [p.name for p in paths.images] == ["r-tradeoff.png"]
    assert not (stem.parent / "r-forgetting_curve.png").exists()
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert markdown.count("Not drawn: ") == 2
    assert "| class | contrastive |" not in markdown


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_report(demo_dir: Path, tmp_path: Path) -> None:
    code, output = _invoke("report", str(demo_dir), "--out", str(tmp_path / "cli"), "--quiet")
    assert code == 0, output
    assert (tmp_path / "cli.html").is_file() and (tmp_path / "cli.md").is_file()
    assert f"wrote {tmp_path / 'cli.html'} and {tmp_path / 'cli.md'}" in output


def test_cli_names_what_was_expected(tmp_path: Path, demo_dir: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a run\n")
    code, output = _invoke("report", str(tmp_path))
    assert code == 2
    assert "neither a run directory nor a bench directory" in output
    assert "results.json" in output and "bench.yaml" in output

    code, output = _invoke("report", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in output and "run directory" in output

    code, output = _invoke("report", str(tmp_path / "notes.txt"))
    assert code == 2 and "is a file" in output

    code, output = _invoke("report", str(demo_dir), "--out", str(tmp_path / "r.html"))
    assert code == 2 and "without extension" in output
    assert not list(tmp_path.glob("r*"))


def test_broken_inputs_are_named(smoke_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"dataset": "digits"}')
    with pytest.raises(ReportSourceError, match=r"run[/\\]results.json: not a valid results.json"):
        build_report(run)

    empty = tmp_path / "bench"
    empty.mkdir()
    shutil.copy(smoke_dir / "bench.yaml", empty / "bench.yaml")
    with pytest.raises(ReportSourceError, match="without any finished cell"):
        build_report(empty)
    (empty / "bench.yaml").write_text("- just a list\n")
    with pytest.raises(ReportSourceError, match="`preset` mapping"):
        build_report(empty)
