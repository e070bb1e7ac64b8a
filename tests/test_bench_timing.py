"""The timing harness on a fake clock: warm-up, interleaving, medians, stage ranges and output."""

import json

import torch

from everest.bench.timing import (
    describe_device,
    environment,
    interleaved,
    interleaved_ranges,
    markdown_table,
    timed_ranges,
    write_json,
)


class FakeClock:
    """Time moves only when a candidate says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runner(self, name: str, seconds: list[float], calls: list[str]):
        costs = iter(seconds)

        def run():
            calls.append(name)
            self.now += next(costs)

        return run


def test_medians_of_interleaved_rounds_after_warm_up():
    clock, calls = FakeClock(), []
    candidates = {
        "slow": clock.runner("slow", [100.0, 3.0, 3.5, 2.5], calls),  # the first call warms up
        "fast": clock.runner("fast", [100.0, 1.0, 9.0, 1.5], calls),
    }
    logged = []
    timings = interleaved(candidates, repeats=3, warmup=1, clock=clock, log=logged.append)
    assert calls == ["slow", "fast"] * 4
    assert timings.wall == {"slow": [3.0, 3.5, 2.5], "fast": [1.0, 9.0, 1.5]}
    assert timings.medians() == {"slow": 3.0, "fast": 1.5}
    assert len(logged) == 3 and logged[-1].startswith("repeat 3/3")


def test_alternate_rounds_and_per_round_inputs():
    clock, calls, rounds = FakeClock(), [], []
    candidates = {"a": clock.runner("a", [1.0] * 4, calls), "b": clock.runner("b", [2.0] * 4, calls)}
    timings = interleaved(candidates, repeats=4, warmup=0, alternate=True, before_round=rounds.append, clock=clock)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert rounds == [0, 1, 2, 3]
    assert timings.medians() == {"a": 1.0, "b": 2.0}


def test_real_callables_keep_their_order():
    def spin(n: int):
        return lambda: sum(range(n))

    medians = interleaved({"short": spin(1_000), "long": spin(200_000)}, repeats=5, warmup=1).medians()
    assert medians["short"] < medians["long"]


def test_timed_ranges_time_only_the_named_record_function_ranges():
    clock = FakeClock()
    real = torch.profiler.record_function

    def step():
        with torch.profiler.record_function("encoder"):
            clock.now += 2.0
        with torch.profiler.record_function("elsewhere"):
            clock.now += 5.0
        with torch.profiler.record_function("loss"):
            clock.now += 1.0
        with torch.profiler.record_function("encoder"):  # repeated ranges add up
            clock.now += 0.5

    with timed_ranges(["encoder", "loss", "decoder"], clock=clock) as seconds:
        step()
    assert dict(seconds) == {"encoder": 2.5, "loss": 1.0}
    assert torch.profiler.record_function is real  # put back
    step()  # no timing outside

    stages = interleaved_ranges({"a": step, "b": step}, 2, ["loss", "encoder"], clock=clock)
    assert stages == {"a": {"loss": 1.0, "encoder": 2.5}, "b": {"loss": 1.0, "encoder": 2.5}}


def test_table_and_record(tmp_path):
    table = markdown_table(["op", "ms"], [["copy", "1.00"], ["gather", "2.00"]])
    assert table.splitlines() == ["| op | ms |", "| --- | ---: |", "| copy | 1.00 |", "| gather | 2.00 |"]
    env = environment("cpu")
    assert env["device"] == describe_device("cpu") and env["device"].startswith("CPU ")
    path = write_json(tmp_path / "deep" / "record.json", {**env, "rows": [1, 2]})
    assert json.loads(path.read_text())["rows"] == [1, 2]
