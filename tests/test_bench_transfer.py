"""The transfer experiment's bookkeeping: its budgets, table, margins, JSON rows and what it reads from logs."""

import json
import math
import statistics
from dataclasses import asdict

import pytest

from everest.experiments.transfer import (
    PRETRAINED_FINETUNE,
    Pretraining,
    Row,
    _test_metrics,
    budgets,
    finetune_overrides,
    last_logged,
    margins,
    markdown,
    parse_args,
    plot,
    reused_pretraining,
    steps_done,
)


def _rows():
    """Two seeds at the largest budget (4000 steps), seed 0 also at 1000 and 2000."""
    accuracy = {
        ("scratch", 0, 0): 40.0,
        ("scratch", 1, 0): 45.0,
        ("everest", 0, 1000): 44.0,
        ("everest", 0, 2000): 48.0,
        ("everest", 0, 4000): 55.0,
        ("everest", 1, 4000): 57.5,
        ("videomae", 0, 4000): 52.5,
        ("videomae", 1, 4000): 60.0,
    }
    rows = []
    for (init, seed, steps), acc in accuracy.items():
        rows.append(
            Row(
                init,
                seed,
                steps,
                test_acc1=acc,
                probe_linear_acc1=acc / 2,
                pretrain_gflops=steps * (0.3 if init == "everest" else 0.6),
                pretrain_wall_s=0.1 * steps,
                pretext_progress=0.25 * (steps > 0),
            )
        )
    return rows


def test_table_has_one_line_per_init_and_budget_with_mean_std_and_seeds():
    lines = markdown(_rows()).splitlines()
    everest = next(line for line in lines if line.startswith("| everest | 4000 |"))
    expected = f"{statistics.mean([55.0, 57.5]):.1f} ± {statistics.stdev([55.0, 57.5]):.1f}"
    assert everest.startswith(f"| everest | 4000 | {expected} | 55.0, 57.5 |")
    assert everest.endswith("| 1200 | 400 | 0.250 |")
    assert any(line.startswith("| scratch | 0 | 42.5 ± 3.5 | 40.0, 45.0 |") for line in lines)
    assert any(line.startswith("| everest | 1000 | 44.0 | 44.0 |") for line in lines)


def test_margins_pair_runs_by_seed_at_the_largest_budget():
    found = margins(_rows())
    assert found["everest_minus_scratch_mean"] == pytest.approx(13.75)
    assert found["everest_minus_scratch_min"] == pytest.approx(12.5)
    assert found["everest_minus_videomae_mean"] == pytest.approx(0.0)
    assert found["everest_minus_videomae_min"] == pytest.approx(-2.5)
    assert found["everest_minus_scratch_probe_mean"] == pytest.approx(13.75 / 2)
    assert found["everest_over_videomae_gflops"] == pytest.approx(0.5)
    # the curve's gain over scratch (42.5): 1.5, 5.5 and 13.75 at 1000, 2000, 4000 steps, fitted in log(steps)
    xs, ys = [math.log(s) for s in (1000, 2000, 4000)], [1.5, 5.5, 13.75]
    fit = statistics.linear_regression(xs, ys)
    assert found["everest_gain_per_budget_doubling"] == pytest.approx(fit.slope * math.log(2))
    assert found["everest_steps_for_plus_10"] == pytest.approx(math.exp((10 - fit.intercept) / fit.slope))


def test_budgets_curve_on_the_first_seed_and_quick_runs_half_the_budget_once():
    args = parse_args(["--budget", "4000"])
    assert args.seeds == [0, 1, 2]
    assert budgets(args, 0) == [1000, 2000, 4000] and budgets(args, 1) == [4000]
    quick = parse_args(["--quick", "--budget", "4000"])
    assert quick.seeds == [0] and budgets(quick, 0) == [2000]


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


def test_reads_the_newest_test_summary(tmp_path):
    for run, acc in (("run-20260101-000000", 10.0), ("run-20260102-000000", 20.0)):
        folder = tmp_path / run / "test"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"videos": 4, "metrics": {"test_acc1": acc}}))
    assert _test_metrics(tmp_path) == {"test_acc1": 20.0}
    with pytest.raises(SystemExit, match="no test summary"):
        _test_metrics(tmp_path / "missing")


def test_plot_writes_a_png(tmp_path):
    plot(_rows(), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pretrained_starts_fine_tune_with_their_own_protocol_and_user_overrides_win(tmp_path):
    args = parse_args(["--finetune", "model.mcm_ratio=0.6"])
    start = Pretraining(str(tmp_path / "ck"), 1.0, 2.0, 0.1, 100)
    scratch = finetune_overrides(args, tmp_path, 3, None)
    pretrained = finetune_overrides(args, tmp_path, 3, start)
    assert not set(PRETRAINED_FINETUNE) & set(scratch)
    assert "model.pretrained_path=" + str(tmp_path / "ck") in pretrained
    for override in PRETRAINED_FINETUNE:  # applied, and before the user's, which comes later and wins
        assert pretrained.index(override) < pretrained.index("model.mcm_ratio=0.6")
    assert scratch[0] == pretrained[0] == "training.seed=3"


def test_reused_pretraining_reads_the_earlier_run_and_leaves_what_it_lacks(tmp_path):
    rows = [asdict(r) for r in _rows()]
    (tmp_path / "transfer.json").write_text(json.dumps({"rows": rows}))
    (tmp_path / "pretrain_everest_2000_seed0" / "ck").mkdir(parents=True)
    found = reused_pretraining(str(tmp_path), "everest", 0, 2000)
    expected = next(r for r in rows if (r["init"], r["seed"], r["pretrain_steps"]) == ("everest", 0, 2000))
    assert found.checkpoint == str(tmp_path / "pretrain_everest_2000_seed0" / "ck")
    assert (found.gflops, found.wall_s, found.pretext_progress) == (
        expected["pretrain_gflops"],
        expected["pretrain_wall_s"],
        expected["pretext_progress"],
    )
    assert reused_pretraining(str(tmp_path), "everest", 0, 4000) is None  # recorded, but no checkpoint folder
    assert reused_pretraining(str(tmp_path), "everest", 0, 8000) is None  # not recorded: pretrained again
    with pytest.raises(SystemExit, match="no transfer.json"):
        reused_pretraining(str(tmp_path / "elsewhere"), "everest", 0, 2000)
