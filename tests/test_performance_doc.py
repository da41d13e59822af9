"""docs/PERFORMANCE.md's prose quotes the stored run (benchmarks/results/latest.json), not figures from earlier runs:
each present-tense figure the prose states is derived here from the stored results and looked up in the text."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_prose_quotes_the_stored_run():
    r = json.loads((REPO / "benchmarks" / "results" / "latest.json").read_text())
    doc = (REPO / "docs" / "PERFORMANCE.md").read_text()
    prose = doc.split("<!-- results:end -->", 1)[1]  # the table above it is generated from the same file
    steady200, steady1000 = r["steady200"], r["steady1000"]
    expected = [
        f"p50 {steady200['p50']:.1f} of 5 ms, p99 {steady200['p99']:.0f} of 25 ms",
        f"~{steady200['engine_cpu_ms_per_turn']:.0f} ms at 100 turns/s",
        f"the p99 (~{round(steady1000['p99'], -1):.0f} ms)",
        f"median ~{round(r['burst200']['p50'], -1):.0f} ms",
        f"{r['throughput']['turns_per_second']:.0f} turns/s in the stored run",
        f"{r['restart']['all_running_seconds']:.2f} s in the stored run",
    ]
    missing = [figure for figure in expected if figure not in prose]
    assert not missing, f"docs/PERFORMANCE.md prose does not quote the stored run: {missing}"


def test_the_chart_indicator_panel_legend_names_what_its_bars_show(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from benchmarks.performance import chart

    drawn: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    r = json.loads((REPO / "benchmarks" / "results" / "latest.json").read_text())
    chart(r, tmp_path / "chart.png")
    [panel] = [ax for ax in drawn[0].axes if "thinking indicator" in ax.get_title()]
    assert "p99" in panel.get_title()
    heights = [bar.get_height() for bar in panel.patches]
    legend = [t.get_text() for t in panel.get_legend().get_texts()]
    for key, height in zip(("steady200", "burst200"), heights, strict=True):
        indicator = r[key]["indicator"]
        assert height == indicator["p99"]
        assert any(f"p99 {indicator['p99']:.1f} ms" in text for text in legend), legend


def test_the_peers_table_and_the_readme_line_come_from_the_stored_peers_run():
    from benchmarks.peers import readme_line, table

    r = json.loads((REPO / "benchmarks" / "results" / "peers.json").read_text())
    assert table(r) in (REPO / "docs" / "PERFORMANCE.md").read_text()
    line = readme_line(r)
    assert line and line in (REPO / "README.md").read_text()
    assert "python -m benchmarks.peers" in line and r["machine"]["date"] in line
