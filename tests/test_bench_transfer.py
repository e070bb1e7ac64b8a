"""The pretraining-transfer benchmark's bookkeeping: its table and where it reads test metrics."""

import json
import statistics

import pytest

from everest.bench.transfer import FinetuneRun, TransferResult, _test_metrics, markdown


def test_table_pairs_runs_by_budget_and_seed():
    result = TransferResult([], [], 12.0)
    accuracy = {("scratch", 25, 0): 40.0, ("pretrained", 25, 0): 52.5, ("scratch", 25, 1): 45.0,
                ("pretrained", 25, 1): 47.5, ("scratch", 100, 0): 80.0, ("pretrained", 100, 0): 70.0,
                ("scratch", 100, 1): 77.5, ("pretrained", 100, 1): 72.5}
    for (start, epochs, seed), acc in accuracy.items():
        result.runs.append(FinetuneRun(seed, epochs, start, {"test_acc1": acc}, 5.0))
    lines = markdown(result, "test_acc1", [25, 100]).splitlines()
    assert "| 25 | 0 | 40.0 | 52.5 | +12.5 |" in lines
    assert "| 100 | 1 | 77.5 | 72.5 | -5.0 |" in lines
    diffs = [-10.0, -5.0]
    expected = f"{statistics.mean(diffs):.1f} ± {statistics.stdev(diffs):.1f}"
    assert any(line.startswith("| 100 | mean ± std | 78.8 ± 1.8 | 71.2 ± 1.8 |") and expected in line
               for line in lines)


def test_reads_the_newest_test_summary(tmp_path):
    for run, acc in (("run-20260101-000000", 10.0), ("run-20260102-000000", 20.0)):
        folder = tmp_path / run / "test"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"videos": 4, "metrics": {"test_acc1": acc}}))
    assert _test_metrics(tmp_path) == {"test_acc1": 20.0}
    with pytest.raises(SystemExit, match="no test summary"):
        _test_metrics(tmp_path / "missing")
