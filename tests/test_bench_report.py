"""docs/benchmarks.md's tables are what bench/results/*.json hold (bench/report.py renders them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from bench import report
from tests.conftest import ROOT


def test_the_committed_tables_match_the_results():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_changed_result_changes_the_tables(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results)
    soak = json.loads((results / "soak.json").read_text())
    soak["milestones"][-1]["errors"] = 7
    (results / "soak.json").write_text(json.dumps(soak))
    document = report.DOC.read_text()
    assert report.updated(document) == document
    changed = report.updated(document, results)
    assert changed != document and "| 7 |" in changed
