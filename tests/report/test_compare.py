"""`edgekd report --compare`: an x86 run (measured) and a Jetson run (predicted) on one page and in
one table, each latency labelled; bad input refused before anything is written."""

from __future__ import annotations

import json

import pytest

from edgekd.cli import main
from edgekd.errors import UserError
from edgekd.report.compare import MARKER, load_runs, render_markdown, write_comparison


@pytest.fixture()
def run_dirs(tmp_path, measured_report, predicted_report):
    dirs = []
    for name, report in (("x86", measured_report), ("orin", predicted_report)):
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "report.json").write_text(json.dumps(report))
        dirs.append(run_dir)
    return dirs


def test_markdown_labels_measured_and_predicted_latencies(run_dirs, measured_report):
    text = render_markdown(load_runs(run_dirs))
    x86, orin = [line for line in text.splitlines() if line.startswith(("| x86 ", "| orin "))]
    p50 = measured_report["models"]["student_int8"]["latency_ms"]["p50"]
    assert f"| {p50:.4f} (measured) |" in x86 and "PREDICTED" not in x86
    assert "| 0.0500 (PREDICTED: predicted (analytical)) | 0.1500 (PREDICTED: predicted (analytical)) |" in orin
    assert "| x86-cpu |" in x86 and "| jetson-orin |" in orin and "| n/a | n/a |" in orin  # no load/memory there


def test_cli_writes_one_page_and_one_table(run_dirs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["report", "--compare", *map(str, run_dirs), "--output", str(out)]) == 0
    page, table = out.read_text(), out.with_suffix(".md").read_text()
    assert table.startswith(MARKER) and str(out) in capsys.readouterr().out
    assert "x86: latency measured" in page and "orin: latency PREDICTED" in page  # the plot's legend
    assert page.count("<svg") == 1 and "<script" not in page
    assert 'class="badge predicted"' in page and 'class="badge measured"' in page
    # run again: refused unless --overwrite, which then replaces only what --compare wrote
    assert main(["report", "--compare", *map(str, run_dirs), "--output", str(out)]) == 2
    assert main(["report", "--compare", *map(str, run_dirs), "--output", str(out), "--overwrite"]) == 0


def test_a_file_compare_did_not_write_is_never_replaced(run_dirs, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    with pytest.raises(UserError, match="not written by"):
        write_comparison(run_dirs, mine, overwrite=True)
    assert mine.read_text() == "my notes"


def test_bad_input_is_refused_before_anything_is_written(run_dirs, tmp_path):
    out = tmp_path / "cmp.html"
    with pytest.raises(UserError, match="at least two"):
        write_comparison(run_dirs[:1], out)
    with pytest.raises(UserError, match="has no report.json"):
        write_comparison([run_dirs[0], tmp_path / "missing"], out)
    (run_dirs[1] / "report.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        write_comparison(run_dirs, out)
    with pytest.raises(UserError, match="must end in .html"):
        write_comparison([run_dirs[0], run_dirs[0]], tmp_path / "cmp.txt")
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_two_runs_of_the_same_name_stay_apart(tmp_path, measured_report):
    dirs = []
    for parent in ("a", "b"):
        run_dir = tmp_path / parent / "x86"
        run_dir.mkdir(parents=True)
        (run_dir / "report.json").write_text(json.dumps(measured_report))
        dirs.append(run_dir)
    assert [name for name, _ in load_runs(dirs)] == ["x86", "b/x86"]
