"""The transfer benchmark's bookkeeping: its table, margins, JSON rows and what it reads from logs."""

import json
import statistics

import pytest

from everest.experiments.transfer import Row, _test_metrics, last_logged, margins, markdown, parse_args, steps_done


def _rows():
    accuracy = {
        ("scratch", 0): 40.0,
        ("everest", 0): 55.0,
        ("videomae", 0): 52.5,
        ("scratch", 1): 45.0,
        ("everest", 1): 57.5,
        ("videomae", 1): 60.0,
    }
    rows = []
    for (init, seed), acc in accuracy.items():
        pretrained = init != "scratch"
        rows.append(
            Row(
                init,
                seed,
                acc,
                pretrain_gflops=(30.0 if init == "everest" else 60.0) if pretrained else 0.0,
                pretrain_wall_s=100.0 * pretrained,
                pretext_progress=0.25 * pretrained,
            )
        )
    return rows


def test_table_has_one_line_per_init_with_mean_std_and_seeds():
    lines = markdown(_rows()).splitlines()
    everest = next(line for line in lines if line.startswith("| everest |"))
    expected = f"{statistics.mean([55.0, 57.5]):.1f} ± {statistics.stdev([55.0, 57.5]):.1f}"
    assert everest.startswith(f"| everest | {expected} | 55.0, 57.5 | 30 | 100 | 0.250 |")
    assert any(line.startswith("| scratch | 42.5 ± 3.5 | 40.0, 45.0 | 0 | 0 | 0.000 |") for line in lines)


def test_margins_pair_runs_by_seed():
    found = margins(_rows())
    assert found["everest_minus_scratch_mean"] == pytest.approx(13.75)
    assert found["everest_minus_scratch_min"] == pytest.approx(12.5)
    assert found["everest_minus_videomae_mean"] == pytest.approx(0.0)
    assert found["everest_minus_videomae_min"] == pytest.approx(-2.5)
    assert found["everest_over_videomae_gflops"] == pytest.approx(0.5)


def test_reads_the_last_logged_value_and_the_step_count():
    text = (
        "epoch 0: val_loss=0.9, pretext_progress=-0.5\n"
        "epoch 1: val_loss=0.5, pretext_progress=1.25e-01, val_token_cosine=0.3\n"
        "done: 640 steps, 20 epochs, train loss 0.3 -> 0.1\n"
    )
    assert last_logged(text, "pretext_progress") == pytest.approx(0.125)
    assert last_logged(text, "missing") is None
    assert steps_done(text) == 640
    with pytest.raises(SystemExit, match="done: N steps"):
        steps_done("interrupted")


def test_quick_runs_one_seed():
    assert parse_args(["--quick"]).seeds == [0]
    assert parse_args([]).seeds == [0, 1, 2]


def test_reads_the_newest_test_summary(tmp_path):
    for run, acc in (("run-20260101-000000", 10.0), ("run-20260102-000000", 20.0)):
        folder = tmp_path / run / "test"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"videos": 4, "metrics": {"test_acc1": acc}}))
    assert _test_metrics(tmp_path) == {"test_acc1": 20.0}
    with pytest.raises(SystemExit, match="no test summary"):
        _test_metrics(tmp_path / "missing")
