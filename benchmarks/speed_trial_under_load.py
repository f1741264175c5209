"""The speed verdict under real load: a finished run's gate pair, timed back to back with and
without CPU burners, at limits on either side of the true ratio.

    .venv/bin/python benchmarks/speed_trial_under_load.py exports/default [--burners-per-core 2]

Reads `<run>/report/results.json`, takes its recommended artifact on cpu at the gate shape and
the uncompressed PyTorch model, and runs `measure/speed_trial.py`'s trial (the same workers and
settings `run` uses) twice: on the quiet host, then with `--burners-per-core` busy-loop processes
per core. Each trial is judged at the run's `min_speedup`, at a limit 20% below the quiet median
and at one 20% above it, so the verdict can be checked against the side of each limit the truth
is on: under load it may extend rounds or say INCONCLUSIVE, but never land on the wrong side.
Rounds whose bare loop ran over LOAD_LIMIT x the bench's are left out, as the gate leaves them.
Writes benchmarks/results/speed_trial_under_load.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asc_deploy.config import GatesConfig  # noqa: E402
from asc_deploy.measure.harness import (  # noqa: E402
    BenchSettings,
    Cell,
    onnx_target,
    run_worker,
    torch_targets,
    worker_spec,
)
from asc_deploy.measure.latency import summarize_ms  # noqa: E402
from asc_deploy.measure.noise import bare_spec  # noqa: E402
from asc_deploy.measure.speed_trial import (  # noqa: E402
    Round,
    bare_bound,
    decide_rounds,
    loaded,
    run_trial,
)
from asc_deploy.records import load_results  # noqa: E402
from asc_deploy.report.recommend import recommend  # noqa: E402


def burn() -> None:
    while True:
        pass


def trial_cells(results):
    """(candidate cell, baseline cell, pick, gates) of the run's speed gate."""
    gates = GatesConfig.model_validate(results.run.config.get("gates") or {})
    pick = (
        results.recommendation.get(gates.speedup_target)
        or recommend(results, gates)[gates.speedup_target]
    )  # the run's own pick, as its report shows it
    batch, sequence = gates.speedup_shape
    candidate = onnx_target(Path(pick.artifact))
    reference = results.reference()
    baseline = next(t for t in torch_targets(reference.path) if t.variant == "torch")
    cells = {
        "candidate": Cell(candidate, gates.speedup_target, batch, sequence),
        "baseline": Cell(baseline, "cpu", batch, sequence),
    }
    return cells, pick, gates


def timed_trial(cells, settings, limit: float, extra: int, quiet_bare_ms: float) -> dict:
    def measure(side: str) -> float:
        if side == "bare":
            spec = bare_spec(settings)
        else:
            spec = worker_spec(cells[side], settings, cells["candidate"].target.sample_inputs)
        return summarize_ms(run_worker(spec, settings.worker_timeout_s)["samples_s"])["p50"]

    start = time.perf_counter()
    bound = bare_bound(quiet_bare_ms)
    trial = run_trial(measure, limit, extra, bound, lambda line: print(line, flush=True))
    return {
        "rounds": [{k: round(v, 4) for k, v in asdict(r).items()} for r in trial.rounds],
        "looks": trial.looks,
        "seconds": round(time.perf_counter() - start, 1),
    }


def verdicts(trial: dict, limits: dict[str, float], quiet_bare_ms: float) -> dict[str, dict]:
    """Each limit judged on the trial's rounds as the gate judges them (loaded rounds out)."""
    rounds = [Round(**r) for r in trial["rounds"]]
    bound = bare_bound(quiet_bare_ms)
    out = {"loaded_rounds": sum(loaded(r, bound) for r in rounds)}
    for name, limit in limits.items():
        d = decide_rounds(rounds, bound, limit, len(trial["looks"]))
        out[name] = {"limit": round(limit, 3), "state": d.state if d else "inconclusive",
                     "median": d and round(d.median, 3), "low": d and d.low,
                     "high": d and d.high}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (exports/<name>)")
    parser.add_argument("--burners-per-core", type=int, default=2)
    parser.add_argument("--extra-rounds", type=int, help="default: the run's max_extra_rounds")
    out = ROOT / "benchmarks/results/speed_trial_under_load.json"
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args()
    results = load_results(args.run / "report" / "results.json")
    cells, pick, gates = trial_cells(results)
    bench_config = results.run.config["bench"]
    recorded = results.bench[0].settings  # the threads the bench (and its bare loop) ran with
    settings = BenchSettings(
        intra_op_threads=recorded["intra_op_threads"],
        inter_op_threads=recorded["inter_op_threads"],
        warmup=bench_config["warmup"],
        min_iterations=bench_config["min_iterations"],
        min_seconds=bench_config["min_seconds"],
    ).validated()
    extra = gates.max_extra_rounds if args.extra_rounds is None else args.extra_rounds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout still stops the burners
    quiet_bare_ms = statistics.median(results.bench[0].noise["bare_p50_ms"])
    print(f"quiet trial: {pick.model} {pick.variant} vs uncompressed torch", flush=True)
    quiet = timed_trial(cells, settings, gates.min_speedup, extra, quiet_bare_ms)
    median = statistics.median(r["baseline_ms"] / r["candidate_ms"] for r in quiet["rounds"])
    limits = {"gate": gates.min_speedup, "below": median * 0.8, "above": median * 1.2}
    burners = [multiprocessing.Process(target=burn, daemon=True)
               for _ in range(args.burners_per_core * (os.cpu_count() or 1))]  # fmt: skip
    for b in burners:
        b.start()
    try:
        print(f"loaded trial: {len(burners)} burners", flush=True)
        loaded_trial = timed_trial(cells, settings, limits["above"], extra, quiet_bare_ms)
    finally:
        for b in burners:
            b.terminate()
    doc = {
        "host": results.bench[0].host.model_dump(),
        "candidate": [pick.model, pick.variant],
        "shape": list(gates.speedup_shape),
        "burners": len(burners),
        "quiet_bare_ms": quiet_bare_ms,
        "quiet": {**quiet, "verdicts": verdicts(quiet, limits, quiet_bare_ms)},
        "loaded": {**loaded_trial, "verdicts": verdicts(loaded_trial, limits, quiet_bare_ms)},
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k]["verdicts"] for k in ("quiet", "loaded")}, indent=2))


if __name__ == "__main__":
    main()
