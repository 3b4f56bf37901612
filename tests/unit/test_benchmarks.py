"""The speed and cost benchmarks' shared helpers: common options, the stamped report, the cost note."""

from __future__ import annotations

import argparse
import sys

from tests.conftest import ROOT, benchmark_module


def test_common_options_and_a_report_stamped_with_commit_and_command(tmp_path, monkeypatch, capsys):
    common = benchmark_module("common")
    parser = argparse.ArgumentParser()
    common.add_common_args(parser, "featurize", data=True, workers=2)
    args = parser.parse_args(["--data", str(tmp_path)])
    assert args.out == ROOT / "reports" / "featurize.md" and args.data == tmp_path and args.workers == 2
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "featurize.py"), "--n-clips", "8"])
    common.write_report(tmp_path / "r.md", "# Title\n\nbody\n")
    lines = (tmp_path / "r.md").read_text().splitlines()
    assert lines[0] == "# Title" and lines[2].startswith("> Produced at commit ")
    assert lines[2].endswith("by: `python benchmarks/featurize.py --n-clips 8`") and lines[4] == "body"
    assert "body" in capsys.readouterr().out


def test_cost_table_note_reports_the_load_it_was_measured_under():
    note = benchmark_module("accuracy").load_note
    assert "0.5–2.0" in note([{"load": 2.0}, {"load": 0.5}]) and "not recorded" not in note([{"load": 1.0}])
    assert "some rows: not recorded" in note([{"load": 1.0}, {}])
    assert "load not recorded" in note([{}])
