"""MLPerf LoadGen serving scenarios on a finished run's artifacts, in one `bench --scenario` call.

The uncompressed model in PyTorch fp32 (served through the same SUT), its ONNX fp32 and
int8-dynamic artifacts, and the run's recommended (pruned) artifact: SingleStream p90 (with the
harness's batch-1 p90 measured around it in the same process), the highest Server QPS whose
p99 stays within the bound, and Offline samples/s, each with LoadGen's verdict; then the ratios
to the uncompressed ONNX fp32 and PyTorch artifacts.

    .venv/bin/python benchmarks/serving_scenarios.py [--run exports/default]
        [--pick top-2/int8-dynamic] [--latency-bound-ms 50]

Run it alone: another job on these 2 cores moves the numbers more than the artifacts differ.
Writes benchmarks/results/serving_scenarios.json (the full bench.json sits beside it as
serving_scenarios.bench.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asc_deploy.fsutil import write_json_atomic  # noqa: E402
from asc_deploy.measure.scenarios import scenario_ratios  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "exports" / "default")
    parser.add_argument("--pick", help="model/variant to serve (default: the recommendation)")
    parser.add_argument("--latency-bound-ms", type=float, default=50.0)
    # Server's p99 early-stopping check needs about 460 queries; PyTorch serves ~17 QPS here,
    # so LoadGen's default 1024 would make each of its search runs a minute long.
    parser.add_argument("--min-queries", type=int, default=500)
    return parser.parse_args()


def main() -> int:
    args = arguments()
    artifacts = args.run / "artifacts"
    targets = [
        artifacts / "uncompressed" / "fp32",
        artifacts / "uncompressed" / "int8-dynamic",
        artifacts / (args.pick or _recommended(args.run)),
    ]
    bench = RESULTS / "serving_scenarios.bench.json"
    command = [
        *(sys.executable, "-c", "from asc_deploy.cli import main; main()", "bench"),
        *map(str, targets),
        *("--torch", str(args.run / "models" / "uncompressed")),
        *("--scenario", "SingleStream", "--scenario", "Server", "--scenario", "Offline"),
        *("--latency-bound-ms", str(args.latency_bound_ms)),
        *("--min-queries", str(args.min_queries)),
        *("--output", str(bench)),
    ]
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        return done.returncode
    doc = json.loads(bench.read_text())
    records = doc["scenarios"]
    summary = {
        "host": doc["host"],
        "latency_bound_ms": args.latency_bound_ms,
        "min_query_count": args.min_queries,
        "artifacts": [_row(r) for r in records],
        "vs_onnx_fp32": scenario_ratios(records, ("uncompressed", "fp32")),
        "vs_torch": scenario_ratios(records, ("uncompressed", "torch")),
    }
    write_json_atomic(RESULTS / "serving_scenarios.json", summary)
    for row in summary["vs_onnx_fp32"]:
        print(
            f"{row['model']}/{row['variant']}: SingleStream p90 {row['p90_latency_ms']} ms, "
            f"Server {row['qps_at_bound']} QPS ({row['qps_at_bound_ratio']}x ONNX fp32), "
            f"Offline {row['samples_per_s']} samples/s"
        )
    return 0


def _recommended(run: Path) -> str:
    """model/variant the run recommends for CPU."""
    results = run / "report" / "results.json"
    if not results.is_file():
        _fail(f"no {results}; run `make bench` first, or pass --pick MODEL/VARIANT")
    pick = json.loads(results.read_text())["recommendation"].get("cpu")
    if not pick or not pick.get("model"):
        _fail(f"{results} recommends nothing for cpu; pass --pick MODEL/VARIANT")
    return f"{pick['model']}/{pick['variant']}"


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _row(record: dict) -> dict:
    check = record.get("harness_check") or {}
    return {
        "model": record["model"],
        "variant": record["variant"],
        "scenario": record["scenario"],
        "validity": record["validity"],
        "value": record["value"],
        "metric": record["metric"],
        "p99_ms": (record["latency_ms"] or {}).get("p99"),
        "harness_p90_ms": check.get("harness_p90_ms"),
        "model_p90_during_ms": check.get("model_p90_during_ms"),
        "sut_overhead": check.get("sut_overhead"),
        "agrees_with_harness": check.get("within_noise"),
    }


if __name__ == "__main__":
    sys.exit(main())
