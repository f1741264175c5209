"""Progress in a log: a line per 5% of the work or per 30 s, whichever first, never more often."""

from __future__ import annotations

import re

import pytest

from asc_deploy.progress import ProgressLines, progress_bar


class FakeClock:
    """A clock that moves only when told: each call returns the current time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(total: int | None, steps: int, seconds_per_step: float) -> tuple[list[int], list[str]]:
    """Drive ProgressLines; return the step each line came at, and the lines."""
    clock, lines, at = FakeClock(), [], []
    progress = ProgressLines("work", total, noun="step", clock=clock, emit=lines.append)
    for step in range(1, steps + 1):
        clock.now += seconds_per_step
        before = len(lines)
        progress.update(step, "loss 0.5000")
        at.extend([step] * (len(lines) - before))
    return at, lines


def test_steady_work_prints_a_line_every_5_percent():
    at, lines = _run(total=200, steps=200, seconds_per_step=0.6)
    assert at == list(range(10, 201, 10))  # 5% of 200 = 10 steps; 6 s apart, far under 30 s
    assert lines[0] == "work: step 10/200 (5%), loss 0.5000, 1.7/s, ETA 1m54s"
    assert lines[-1].startswith("work: step 200/200 (100%)") and lines[-1].endswith("ETA 0s")


def test_slow_work_prints_a_line_every_30_seconds():
    at, lines = _run(total=1000, steps=40, seconds_per_step=10.0)
    assert at == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39]  # 30 s, long before 5%
    assert lines[0] == "work: step 3/1000 (0%), loss 0.5000, 0.1/s, ETA 2h46m"


def test_fast_work_prints_no_more_than_a_line_every_5_seconds():
    at, _ = _run(total=200, steps=200, seconds_per_step=0.125)
    assert at == list(range(40, 201, 40))  # 5% is 1.25 s of work: a line each 5 s instead


def test_lines_never_come_more_often_than_both_rules_allow():
    clock, lines = FakeClock(), []
    progress = ProgressLines("work", 100, clock=clock, emit=lines.append)
    times, dones = [], []
    for step, dt in enumerate([0.5, 7, 0.2, 31, 0.1, 0.1, 12, 2, 45, 0.3] * 10, start=1):
        clock.now += dt
        count = len(lines)
        progress.update(step)
        if len(lines) > count:
            times.append(clock.now)
            dones.append(step)
    assert len(dones) >= 5
    gaps = zip([0.0, *times], times, [0, *dones], dones, strict=False)
    for t0, t1, d0, d1 in gaps:
        assert t1 - t0 >= 30 or (d1 - d0 >= 5 and t1 - t0 >= 5)


def test_without_a_total_only_time_counts():
    at, lines = _run(total=None, steps=100, seconds_per_step=1.0)
    assert at == [30, 60, 90] and lines[0] == "work: step 30, loss 0.5000, 1.0/s"


def test_progress_bar_in_a_log_prints_periodic_lines_and_an_end_line(capsys, monkeypatch):
    monkeypatch.delenv("ASC_QUIET", raising=False)
    clock = FakeClock()
    with progress_bar("profiling", total=40, clock=clock) as advance:
        for _ in range(40):
            clock.now += 0.25
            advance(1)
    lines = capsys.readouterr().err.splitlines()  # captured stderr is not a terminal
    assert len(lines) == 3  # 5% is 0.5 s of work: a line each 5 s (at 20 and 40), the end line
    assert lines[0] == "profiling: 20/40 (50%), 4.0/s, ETA 5s"
    assert lines[-1] == "profiling: done, 40/40 (100%) in 10s"


def test_quiet_keeps_only_the_end_line(capsys, monkeypatch):
    monkeypatch.setenv("ASC_QUIET", "1")
    clock = FakeClock()
    with progress_bar("profiling", total=10, clock=clock) as advance:
        for _ in range(10):
            clock.now += 40.0
            advance(1)
    assert capsys.readouterr().err.splitlines() == ["profiling: done, 10/10 (100%) in 6m40s"]


@pytest.mark.parametrize("quiet", [False, True])
def test_trainer_prints_step_loss_rate_and_eta_in_a_log(quiet, capsys, monkeypatch, tiny_model_dir):
    import json

    from asc_deploy.compress.finetune import finetune
    from asc_deploy.config import FinetuneConfig, TaskConfig
    from asc_deploy.tasks.presets import build_task

    # Order and content, not timing: every 5% step may print however fast the tiny model is.
    monkeypatch.setattr("asc_deploy.progress.MIN_SECONDS_BETWEEN_LINES", 0.0)
    if quiet:
        monkeypatch.setenv("ASC_QUIET", "1")
    else:
        monkeypatch.delenv("ASC_QUIET", raising=False)
    path = tiny_model_dir("bert").parent / "toy.jsonl"
    rows = [
        {"text": f"the movie was {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(16)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build_task(
        TaskConfig(
            family="classification",
            train_file=str(path),
            eval_file=str(path),
            text_column="text",
            labels=["negative", "positive"],
        )
    )
    recipe = FinetuneConfig(preset="cpu-fast", max_steps=20, batch_size=4)
    finetune(tiny_model_dir("bert"), task, recipe, path.parent / "out", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "fine-tune" in line]
    # 20 steps: 5% is one step, so a line per step (order and content, not timing), then the end.
    pattern = r"fine-tune [\w-]+: step (\d+)/20 \(\d+%\), loss \d\.\d{4}, [\d.]+ ex/s, ETA \w+"
    steps = [int(re.fullmatch(pattern, line).group(1)) for line in lines[:-1]]
    assert steps == ([] if quiet else list(range(1, 21)))  # quiet: the end line only
    assert lines[-1].startswith("fine-tune") and ": done, step 20/20 (100%) in " in lines[-1]
