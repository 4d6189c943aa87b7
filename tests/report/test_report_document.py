"""The report's blocks and their two renderings, without any run (milliseconds)."""

from __future__ import annotations

from conun.report import (
    BulletList,
    CodeBlock,
    Heading,
    Image,
    Paragraph,
    Report,
    Table,
    blocks_from_markdown,
    image_file_names,
    render_html,
    render_markdown,
)

PNG = b"\x89PNG\r\n\x1a\n fake"


def _report() -> Report:
    return Report(
        "a <title> & more",
        [
            Heading("Setting"),
            BulletList(("dataset: digits", "model: <b>small_cnn</b>")),
            Paragraph("accuracy in %"),
            Table(
                ("number", "retrain", "meaning"),
                (("avg_gap", "0.5", "mean |Δ| to retrain"), ("tow", "–", "<script>x</script>")),
            ),
            CodeBlock("conun bench smoke --out 'a b'", "console"),
            Image("tradeoff", "Trade-off [x]", "gap against utility", PNG),
        ],
    )


def test_markdown_tables_round_trip_with_pipes_in_cells() -> None:
    report = _report()
    files = image_file_names(report, "my report")
    assert files == {"tradeoff": "my report-tradeoff.png"}
    markdown = render_markdown(report, files)
    assert markdown.startswith("# a <title> & more\n\n## Setting\n\n- dataset: digits\n")
    assert "| avg_gap | 0.5 | mean \\|Δ\\| to retrain |" in markdown
    assert "```console\nconun bench smoke --out 'a b'\n```" in markdown
    assert "![Trade-off (x)](my%20report-tradeoff.png)\n\ngap against utility" in markdown
    (table,) = [b for b in blocks_from_markdown(markdown) if isinstance(b, Table)]
    assert table == report.blocks[3]


def test_html_escapes_every_text_and_embeds_images() -> None:
    page = render_html(_report())
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>a &lt;title&gt; &amp; more</title>" in page
    assert "&lt;b&gt;small_cnn&lt;/b&gt;" in page and "<b>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script" not in page
    assert '<td class="num">0.5</td>' in page and "<td>mean |Δ| to retrain</td>" in page
    assert 'src="data:image/png;base64,iVBORw0KGgogZmFrZQ=="' in page
    assert 'alt="Trade-off [x]"' in page and "<figcaption>gap against utility</figcaption>" in page


def test_markdown_parser_reads_headings_paragraphs_and_tables() -> None:
    blocks = blocks_from_markdown(
        "# Title\n\nline one\nline two\n\n| a | b |\n|---|---|\n| 1 | 2 |\nafter\n"
    )
    assert blocks == [
        Heading("Title", level=1),
        Paragraph("line one line two"),
        Table(("a", "b"), (("1", "2"),)),
        Paragraph("after"),
    ]
