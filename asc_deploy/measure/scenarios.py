"""Serving scenarios measured with MLPerf LoadGen: SingleStream, Server and Offline.

Each LoadGen test runs in a fresh worker process (`harness.run_worker` with a `kind: loadgen`
spec, served by `loadgen_sut.measure_scenario`); this module plans them and turns LoadGen's
summaries into `scenarios` records for bench.json:

- SingleStream: one query at a time; the metric is LoadGen's p90 latency (p99 recorded too);
- Server: Poisson arrivals; the highest target QPS whose p99 stays within `latency_bound_ms`,
  found by LoadGen runs at doubling (or halving) target QPS and then bisection between the
  highest VALID and the lowest INVALID rate; the metric is that run's scheduled samples/s;
- Offline: all queries at once, batched (sorted by length); the metric is samples/s. LoadGen
  sizes the one query from `offline_expected_qps`; a run that ends before the minimum duration
  is repeated with the rate it measured.

An INVALID LoadGen verdict leaves `value` null: it is reported as INVALID, never as a number.
Imports neither torch nor transformers (nor mlperf_loadgen: only the worker loads it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from asc_deploy.config import SCENARIOS, ScenarioConfig
from asc_deploy.errors import UserError
from asc_deploy.fsutil import utc_now

METRICS = {"SingleStream": "p90_latency_ms", "Server": "qps_at_bound", "Offline": "samples_per_s"}
SIZING_ATTEMPTS = 3  # SingleStream / Offline runs that LoadGen sized too short are repeated
_NS_KEYS = {
    "min": "Min latency (ns)",
    "max": "Max latency (ns)",
    "mean": "Mean latency (ns)",
    "p50": "50.00 percentile latency (ns)",
    "p90": "90.00 percentile latency (ns)",
    "p95": "95.00 percentile latency (ns)",
    "p97": "97.00 percentile latency (ns)",
    "p99": "99.00 percentile latency (ns)",
    "p99.9": "99.90 percentile latency (ns)",
}
_CONSTRAINTS = (
    "Performance constraints satisfied",
    "Min duration satisfied",
    "Min queries satisfied",
    "Early stopping satisfied",
)


def scenario_config(base: ScenarioConfig | None = None, **overrides: Any) -> ScenarioConfig:
    """`base` with the `overrides` that are not None, validated; UserError for a bad value."""
    merged = (base or ScenarioConfig()).model_dump()
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ScenarioConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"] if not isinstance(p, int)) or "scenarios"
        message = first["msg"].removeprefix("Value error, ")
        got = f" (got {first['input']!r})" if first["type"] != "value_error" else ""
        raise UserError(f"scenario setting {key}: {message}{got}") from exc


# ---------------------------------------------------------------- plan and checks

Runner = Callable[[dict[str, Any], float], dict[str, Any]]
Progress = Callable[[str], None]


# LoadGen schedules every query of a Server run before the first one is issued: measured with
# mlperf-loadgen 5.x, 1e6 queries grow its process by 514 MB (2e5: 107 MB); with some margin:
LOADGEN_BYTES_PER_QUERY = 600
LOADGEN_MEMORY_SHARE = 0.5  # of the memory available now: the SUT and its sessions need the rest


def check_server_rate(config: ScenarioConfig, available_bytes: float | None = None) -> None:
    """UserError when the highest Server rate LoadGen may be asked for (server_target_qps, or
    the search's server_max_qps) over min_duration_s schedules more queries than the host's
    memory holds: a 1e9 QPS run grew to 22 GB until the kernel killed it."""
    if "Server" not in config.run:
        return
    fixed = config.server_target_qps is not None
    qps = config.server_target_qps if fixed else config.server_max_qps
    queries = max(config.min_query_count, qps * config.min_duration_s)
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    budget = LOADGEN_MEMORY_SHARE * available_bytes
    if queries * LOADGEN_BYTES_PER_QUERY <= budget:
        return
    most = budget / LOADGEN_BYTES_PER_QUERY / config.min_duration_s
    setting = "--target-qps / server_target_qps" if fixed else "server_max_qps"
    raise UserError(
        f"Server at {qps:g} QPS for {config.min_duration_s:g} s schedules {queries:.3g} queries, "
        f"{queries * LOADGEN_BYTES_PER_QUERY / 1e9:.1f} GB of LoadGen state, but this host has "
        f"{available_bytes / 1e9:.1f} GB available; ask for at most {most:.0f} QPS ({setting}) "
        "or a shorter min_duration_s (--scenario-seconds)"
    )


def check_scenarios(targets: list, settings: Any, config: ScenarioConfig) -> Path:
    """Everything that can fail before LoadGen starts; returns the queries' sample_inputs.npz."""
    from asc_deploy.measure.ort_runner import resolve_provider

    if not config.run:
        raise UserError("no scenario to run: give --scenario SingleStream, Server or Offline")
    check_server_rate(config)
    if importlib.util.find_spec("mlperf_loadgen") is None:
        from asc_deploy.measure.loadgen_sut import INSTALL_HINT

        raise UserError(f"serving scenarios need MLPerf LoadGen: {INSTALL_HINT}")
    for provider in settings.providers:
        resolve_provider(provider)
    samples = next((t.sample_inputs for t in targets if t.sample_inputs), None)
    if samples is None:
        raise UserError(
            "serving scenarios replay real queries: pass an artifact folder with "
            "sample_inputs.npz (a bare .onnx file has none)"
        )
    for t in targets:
        path = t.sample_inputs or samples
        with np.load(path) as data:
            longest = int(data["lengths"].max())
        if t.max_positions is not None and longest > t.max_positions:
            raise UserError(
                f"{path} holds {longest}-token examples, longer than {t.label} takes "
                f"({t.max_positions} positions); re-export with shorter examples"
            )
    return samples


def worker_spec(
    target: Any,
    provider: str,
    scenario: str,
    settings: Any,
    config: ScenarioConfig,
    sample_inputs: Path,
    **loadgen: Any,
) -> dict[str, Any]:
    """The spec one worker runs: which model, how the SUT serves, and LoadGen's settings."""
    instances, batch, delay = {
        "SingleStream": (1, 1, 0.0),
        "Server": (config.server_instances, config.max_batch_size, config.max_queue_delay_ms),
        "Offline": (config.offline_instances, config.offline_batch_size, 0.0),
    }[scenario]
    threads = config.threads_per_instance or max(1, settings.intra_op_threads // instances)
    spec = {
        "kind": "loadgen",
        "scenario": scenario,
        "runtime": target.runtime,
        "model_path": str(target.model_path),
        "variant": target.variant,
        "provider": provider,
        "sample_inputs": str(target.sample_inputs or sample_inputs),
        "instances": instances,
        "intra_op_threads": threads,
        "inter_op_threads": settings.inter_op_threads,
        "warmup": settings.warmup,
        "max_batch_size": batch,
        "max_queue_delay_ms": delay,
        "sort_by_length": scenario == "Offline",
        "min_duration_s": config.min_duration_s,
        "min_query_count": config.min_query_count,
        "latency_bound_ms": config.latency_bound_ms if scenario == "Server" else None,
        "target_qps": None,
        "expected_qps": None,
        "expected_latency_ms": None,
        "log_dir": None,
        "harness_check": False,
    }
    spec.update(loadgen)
    return spec


# ---------------------------------------------------------------- running


def run_scenarios(
    targets: list,
    settings: Any,
    config: ScenarioConfig,
    progress: Progress | None = None,
    runner: Runner | None = None,
) -> list[dict[str, Any]]:
    """Every target x provider x configured scenario -> `scenarios` records for bench.json.

    `settings` is a validated `harness.BenchSettings` (threads, warm-up, providers, timeout).
    """
    from asc_deploy.measure import harness

    run = runner or harness.run_worker
    samples = check_scenarios(targets, settings, config)
    records = []
    for target in targets:
        providers = ["cpu"] if target.runtime == "torch" else list(settings.providers)
        for provider in providers:
            session = _Session(target, provider, settings, config, samples, run, progress)
            records.extend(session.run_all())
    return records


class _Session:
    """The scenarios of one target on one provider, sharing one SingleStream rate estimate."""

    def __init__(self, target, provider, settings, config, samples, runner, progress):
        self.target, self.provider, self.settings, self.config = target, provider, settings, config
        self.samples, self.runner, self.progress = samples, runner, progress
        self.single_stream_qps: float | None = None
        self.runs = 0

    def measure(self, scenario: str, note: str = "", **loadgen: Any) -> dict[str, Any]:
        t = self.target
        if self.progress:
            self.progress(f"{scenario}{note}: {t.model}/{t.variant} [{self.provider}]")
        self.runs += 1
        if self.config.log_dir is not None:
            folder = f"{t.model}-{t.variant}-{t.runtime}-{self.provider}".replace("/", "_")
            loadgen["log_dir"] = str(self.config.log_dir / folder / f"{self.runs:02d}-{scenario}")
        spec = worker_spec(
            self.target,
            self.provider,
            scenario,
            self.settings,
            self.config,
            self.samples,
            **loadgen,
        )
        return self.runner(spec, self.settings.worker_timeout_s) | {"spec": spec}

    def run_all(self) -> list[dict[str, Any]]:
        order = [s for s in SCENARIOS if s in self.config.run]
        return [getattr(self, f"_{s.lower()}")() for s in order]

    def _rate(self) -> float:
        """Queries/s of one instance at batch 1, from SingleStream (a short probe if needed)."""
        if self.single_stream_qps is None:
            result = self.measure(
                "SingleStream",
                " (probe)",
                min_duration_s=self.config.probe_duration_s,
                min_query_count=32,
            )
            self._note_rate(result)
        return self.single_stream_qps or 1.0

    def _note_rate(self, result: dict[str, Any]) -> None:
        qps = result["summary"]["fields"].get("QPS w/o loadgen overhead")
        self.single_stream_qps = float(qps) if qps else None

    def _singlestream(self) -> dict[str, Any]:
        def resize(expected_ms: float, fields: dict) -> float:
            # LoadGen pre-generates min_duration / expected latency queries: expect less.
            mean = _ms(fields.get(_NS_KEYS["mean"])) or expected_ms
            return _round(min(mean / 1.5, expected_ms / 2))

        attempts = self._sized(
            "SingleStream", "expected_latency_ms", 1.0, resize, harness_check=True
        )
        self._note_rate(attempts[-1])
        return self._record("SingleStream", attempts[-1], [_point(a) for a in attempts])

    def _server(self) -> dict[str, Any]:
        c = self.config
        if c.server_target_qps is not None:
            result = self.measure(
                "Server", f" at {c.server_target_qps:g} QPS", target_qps=c.server_target_qps
            )
            if too_short(result["summary"]):
                raise UserError(_too_short(self.target, c, result))
            if result["summary"]["result"] != "VALID":
                raise UserError(_unreachable(self.target, c, result))
            return self._record("Server", result, [_point(result)], search=None)
        start = c.server_start_qps or 0.5 * c.server_instances * self._rate()
        results: dict[float, dict] = {}

        def run_at(qps: float) -> bool:
            results[qps] = self.measure("Server", f" at {qps:g} QPS", target_qps=qps)
            if too_short(results[qps]["summary"]):
                # A lower rate gives fewer queries still: halving would never end VALID.
                raise UserError(_too_short(self.target, c, results[qps]))
            return results[qps]["summary"]["result"] == "VALID"

        tried, stopped = search_qps(
            run_at, start, c.server_min_qps, c.server_max_qps, c.server_tolerance, c.server_max_runs
        )
        valid = [q for q in tried if results[q]["summary"]["result"] == "VALID"]
        best = results[max(valid)] if valid else results[min(tried)]
        search = {"start_qps": _round(start), "stopped": stopped, "runs": len(tried)}
        return self._record("Server", best, [_point(results[q]) for q in tried], search=search)

    def _offline(self) -> dict[str, Any]:
        c = self.config

        def resize(expected: float, fields: dict) -> float:
            # The one query ran out before the minimum duration: size it from the measured rate.
            return _round(max(1.5 * float(fields.get("Samples per second") or 0), 2 * expected))

        start = c.offline_expected_qps or 2.0 * c.offline_instances * self._rate()
        attempts = self._sized("Offline", "expected_qps", _round(start), resize)
        return self._record("Offline", attempts[-1], [_point(a) for a in attempts])

    def _sized(
        self, scenario: str, key: str, value: float, resize, **loadgen: Any
    ) -> list[dict[str, Any]]:
        """Runs until LoadGen's minimum duration is met (at most SIZING_ATTEMPTS)."""
        attempts = []
        for _ in range(SIZING_ATTEMPTS):
            result = self.measure(scenario, f" ({key} {value:g})", **{key: value}, **loadgen)
            attempts.append(result)
            fields = result["summary"]["fields"]
            if fields.get("Min duration satisfied") != "NO":
                break
            value = resize(value, fields)
        return attempts

    def _record(self, scenario, result, runs, search=None) -> dict[str, Any]:
        record = scenario_record(self.target, self.provider, scenario, result, runs, search)
        if "harness_check" in result:
            record["harness_check"] = harness_agreement(
                result["harness_check"], record["value"], self.settings.noise_threshold
            )
        return record


def search_qps(
    run_at: Callable[[float], bool],
    start: float,
    min_qps: float,
    max_qps: float,
    tolerance: float,
    max_runs: int,
) -> tuple[list[float], str]:
    """Target rates tried, in order, and why the search stopped.

    `run_at(qps)` is True when LoadGen says VALID. The rate doubles from `start` until a run is
    INVALID (or halves until one is VALID), then bisects between the highest VALID and the
    lowest INVALID rate until they are within `tolerance` of each other.
    """
    tried: list[float] = []
    valid_hi: float | None = None  # highest VALID rate so far
    invalid_lo: float | None = None  # lowest INVALID rate so far
    qps = _round(min(max(start, min_qps), max_qps))
    while len(tried) < max_runs:
        tried.append(qps)
        if run_at(qps):
            valid_hi = max(qps, valid_hi or qps)
        else:
            invalid_lo = min(qps, invalid_lo or qps)
        if invalid_lo is None:
            if qps >= max_qps:
                return tried, f"VALID at server_max_qps ({max_qps:g}); raise it to search higher"
            qps = _round(min(2 * qps, max_qps))
        elif valid_hi is None:
            if qps <= min_qps:
                return tried, f"INVALID down to server_min_qps ({min_qps:g})"
            qps = _round(max(qps / 2, min_qps))
        else:
            if (invalid_lo - valid_hi) / valid_hi <= tolerance:
                return tried, "converged"
            qps = _round((valid_hi + invalid_lo) / 2)
    return tried, "run limit reached"


def _round(qps: float) -> float:
    """Four significant digits: target rates read cleanly and repeat exactly."""
    return float(f"{qps:.4g}")


_TOO_FEW = ("Min duration satisfied", "Min queries satisfied", "Early stopping satisfied")


def too_short(summary: dict[str, Any]) -> bool:
    """INVALID only because the run had too few queries for LoadGen to decide (its duration,
    query count or early stopping unmet) while the latency met its bound: not a latency miss."""
    fields = summary["fields"]
    if summary["result"] == "VALID" or fields.get("Performance constraints satisfied") == "NO":
        return False
    return any(fields.get(key) == "NO" for key in _TOO_FEW)


def _too_short(target, config: ScenarioConfig, result: dict) -> str:
    summary = result["summary"]
    p99 = _ms(summary["fields"].get(_NS_KEYS["p99"]))
    qps = result["spec"]["target_qps"]
    return (
        f"LoadGen's Server run at {qps:g} QPS on {target.model}/{target.variant} is INVALID "
        f"only because it had too few queries ({result['queries']}; "
        f"{'; '.join(invalid_reasons(summary))}) while p99 {p99} ms met the "
        f"{config.latency_bound_ms:g} ms bound; raise min_query_count (--min-queries, p99 "
        "early stopping needs about 460) or min_duration_s (--scenario-seconds)"
    )


def _unreachable(target, config: ScenarioConfig, result: dict) -> str:
    summary = result["summary"]
    p99 = _ms(summary["fields"].get(_NS_KEYS["p99"]))
    return (
        f"LoadGen could not serve {config.server_target_qps:g} QPS with p99 <= "
        f"{config.latency_bound_ms:g} ms on {target.model}/{target.variant} (INVALID, p99 "
        f"{p99} ms: {'; '.join(invalid_reasons(summary)) or 'see LoadGen summary'}); lower "
        "server_target_qps or leave it out to search for the highest rate"
    )


# ---------------------------------------------------------------- records


def _ms(ns: Any) -> float | None:
    return round(float(ns) / 1e6, 4) if isinstance(ns, int | float) else None


def latency_ms(fields: dict[str, Any]) -> dict[str, float | None]:
    return {k: _ms(fields.get(key)) for k, key in _NS_KEYS.items()}


def invalid_reasons(summary: dict[str, Any]) -> list[str]:
    """LoadGen's unmet constraints and its recommendations (empty when VALID)."""
    fields = summary["fields"]
    unmet = [f"{key}: NO" for key in _CONSTRAINTS if fields.get(key) == "NO"]
    return unmet + list(summary.get("recommendations", []))


def metric_value(scenario: str, summary: dict[str, Any]) -> float | None:
    """The scenario's headline number; None unless LoadGen said VALID."""
    if summary["result"] != "VALID":
        return None
    fields = summary["fields"]
    raw = {
        "SingleStream": _ms(fields.get("90.0th percentile latency (ns)")),
        "Server": fields.get("Scheduled samples per second"),
        "Offline": fields.get("Samples per second"),
    }[scenario]
    return None if raw is None else round(float(raw), 4)


def _point(result: dict[str, Any]) -> dict[str, Any]:
    """One LoadGen run as a point of the QPS search / Offline sizing (and of the plot)."""
    spec, fields = result["spec"], result["summary"]["fields"]
    completed = (
        fields.get("Completed samples per second")
        or fields.get("Samples per second")
        or fields.get("QPS w/o loadgen overhead")
    )
    return {
        "target_qps": spec.get("target_qps"),
        "expected_qps": spec.get("expected_qps"),
        "expected_latency_ms": spec.get("expected_latency_ms"),
        "validity": result["summary"]["result"],
        "p99_ms": _ms(fields.get(_NS_KEYS["p99"])),
        "completed_per_s": completed,
        "batches": result["batches"],
        "log_dir": spec["log_dir"],
    }


def scenario_record(
    target: Any,
    provider: str,
    scenario: str,
    result: dict[str, Any],
    runs: list[dict[str, Any]],
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One element of bench.json's `scenarios` list (see docs/results-schema.md)."""
    spec, summary = result["spec"], result["summary"]
    valid = summary["result"] == "VALID"
    return {
        "artifact": target.label,
        "model": target.model,
        "variant": target.variant,
        "runtime": target.runtime,
        "provider": provider,
        "verified": target.verified,
        "scenario": scenario,
        "validity": "VALID" if valid else "INVALID",
        "metric": METRICS[scenario],
        "value": metric_value(scenario, summary),
        "latency_ms": latency_ms(summary["fields"]) if valid else None,
        "early_stopping_ms": summary.get("early_stopping_estimate_ms") if valid else None,
        "latency_bound_ms": spec["latency_bound_ms"],
        "target_qps": spec["target_qps"],
        "invalid_reasons": invalid_reasons(summary),
        "search": search,
        "runs": runs,
        "sut": {
            "instances": spec["instances"],
            "intra_op_threads": spec["intra_op_threads"],
            "inter_op_threads": spec["inter_op_threads"],
            "max_batch_size": spec["max_batch_size"],
            "max_queue_delay_ms": spec["max_queue_delay_ms"],
            "sort_by_length": spec["sort_by_length"],
            "padding": "per batch, to its longest query",
            "queries": result["queries"],
            "mean_query_length": result["mean_length"],
            "batches": result["batches"],
            "providers_in_use": result["providers"],
            "gil_switch_interval_ms": result.get("gil_switch_interval_ms"),
        },
        "loadgen": {
            "version": _loadgen_version(),
            "mode": "PerformanceOnly",
            "settings": summary["settings"],
            "summary": summary["fields"],
        },
    }


def _loadgen_version() -> str | None:
    try:
        return importlib.metadata.version("mlcommons-loadgen")
    except importlib.metadata.PackageNotFoundError:
        return None


def scenario_flags(records: list[dict[str, Any]]) -> list[str]:
    """One bench.json flag per INVALID record, naming LoadGen's reasons."""
    return [
        f"LoadGen INVALID: {r['scenario']} for {r['model']}/{r['variant']} on {r['provider']}"
        f" ({'; '.join(r['invalid_reasons']) or 'no reason given'})"
        for r in records
        if r["validity"] != "VALID"
    ]


def bench_document(
    records: list[dict[str, Any]], settings: Any, config: ScenarioConfig
) -> dict[str, Any]:
    """A bench.json (schema asc-deploy.bench/1) holding scenarios only: `measurements` empty."""
    from asc_deploy.measure import harness, system

    load = system.load_average()
    return {
        "schema": harness.SCHEMA,
        "created": utc_now(),
        "host": system.host_info(),
        "settings": settings.record(),
        "scenario_settings": config.record(),
        "load_average": {"before": load, "after": load},
        "rounds": [],
        "flags": scenario_flags(records),
        "measurements": [],
        "scenarios": records,
    }


# ---------------------------------------------------------------- ratios and the gate


def _find(records, model, variant, provider, scenario, bound=None) -> dict | None:
    for r in records:
        if (r["model"], r["variant"], r["provider"], r["scenario"]) != (
            model,
            variant,
            provider,
            scenario,
        ):
            continue
        if bound is None or r.get("latency_bound_ms") == bound:
            return r
    return None


def reference_variant(records: list[dict[str, Any]], reference: str, provider: str) -> str:
    """The reference model's variant the ratios compare against: PyTorch when it was served
    (the study's baseline), else the first variant that was."""
    served = [r["variant"] for r in records if (r["model"], r["provider"]) == (reference, provider)]
    return "torch" if "torch" in served or not served else served[0]


def scenario_ratios(
    records: list[dict[str, Any]], reference: tuple[str, str], provider: str = "cpu"
) -> list[dict[str, Any]]:
    """Per (model, variant) on `provider`: each scenario's value and its ratio to `reference`.

    `reference` is (model, variant) of the uncompressed model, e.g. ("uncompressed", "torch").
    Ratios are value / reference value: below 1 is better for SingleStream p90 latency, above 1
    for Server QPS at the bound and Offline samples/s. A value or ratio is None where either
    side is missing or INVALID; Server values compare only at the same latency bound.
    """
    keys = sorted({(r["model"], r["variant"]) for r in records if r["provider"] == provider})
    rows = []
    for model, variant in keys:
        row: dict[str, Any] = {"model": model, "variant": variant, "provider": provider}
        for scenario, metric in METRICS.items():
            mine = _find(records, model, variant, provider, scenario)
            bound = mine.get("latency_bound_ms") if mine else None
            ref = _find(records, *reference, provider, scenario, bound)
            value = mine["value"] if mine else None
            ref_value = ref["value"] if ref else None
            row[metric] = value
            row[f"{metric}_validity"] = mine["validity"] if mine else None
            row[f"{metric}_ratio"] = (
                round(value / ref_value, 4) if value is not None and ref_value else None
            )
        row["latency_bound_ms"] = (_find(records, model, variant, provider, "Server") or {}).get(
            "latency_bound_ms"
        )
        rows.append(row)
    return rows


def harness_agreement(
    check: dict[str, Any], loadgen_p90_ms: float | None, noise_threshold: float
) -> dict[str, Any]:
    """SingleStream's p90 against the harness's batch-1 p90 of the same queries, same process.

    `check` is loadgen_sut.side_by_side's block: the harness loop's p90 before and after the
    LoadGen test, and the model calls' p90 timed inside the SUT during it. Between loops seconds
    apart this VM drifts 10-40%, so agreement is judged at the same moments: what LoadGen's p90
    adds over the model's (the SUT's own cost) must stay within the harness's noise, the larger
    of the bench's noise threshold and the spread of the two loops. `difference_vs_loops`
    records the plain comparison with the loops' mean.
    """
    from asc_deploy.measure.latency import relative_spread

    loops = check["harness_p90_ms"]
    loops_mean = float(np.mean(loops))
    spread = relative_spread(loops)  # of two loops: (max - min) / their mean
    tolerance = max(noise_threshold, spread)
    during = check["model_p90_during_ms"]
    out = {
        **check,
        "loadgen_p90_ms": loadgen_p90_ms,
        "harness_spread": round(spread, 4),
        "tolerance": round(tolerance, 4),
        "sut_overhead_ms": None,
        "sut_overhead": None,
        "difference_vs_loops": None,
        "within_noise": None,
    }
    if loadgen_p90_ms is None or during <= 0 or loops_mean <= 0:
        return out  # INVALID (or nothing timed): nothing to compare
    overhead = (loadgen_p90_ms - during) / during
    out["sut_overhead_ms"] = round(loadgen_p90_ms - during, 4)
    out["sut_overhead"] = round(overhead, 4)
    out["difference_vs_loops"] = round((loadgen_p90_ms - loops_mean) / loops_mean, 4)
    out["within_noise"] = abs(overhead) <= tolerance
    return out


def check_min_qps(
    records: list[dict[str, Any]],
    candidate: tuple[str, str],
    provider: str,
    latency_bound_ms: float,
    min_qps: float | None = None,
    min_ratio: float | None = None,
    reference: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Gate `min_qps_at_bound`: {name, passed, value, limit, reason}.

    The candidate's VALID Server QPS at p99 <= `latency_bound_ms` on `provider` must reach
    `min_qps`, or (with `min_ratio`) that many times the `reference` model's. A missing or
    INVALID Server result fails the gate.
    """
    if (min_qps is None) == (min_ratio is None):
        raise UserError("gate min_qps_at_bound: give exactly one of min_qps or min_ratio")
    if min_ratio is not None and reference is None:
        raise UserError("gate min_qps_at_bound: min_ratio needs the reference (model, variant)")
    name, label = "min_qps_at_bound", f"{candidate[0]}/{candidate[1]} on {provider}"
    mine = _find(records, *candidate, provider, "Server", latency_bound_ms)
    if mine is None or mine["value"] is None:
        state = "no Server result" if mine is None else "Server result INVALID"
        reason = f"{label}: {state} at p99 <= {latency_bound_ms:g} ms"
        return _gate(name, False, None, min_qps if min_ratio is None else min_ratio, reason)
    if min_ratio is None:
        passed = mine["value"] >= min_qps
        reason = (
            f"{label} serves {mine['value']:g} QPS at p99 <= {latency_bound_ms:g} ms "
            f"({'>=' if passed else '<'} {min_qps:g})"
        )
        return _gate(name, passed, mine["value"], min_qps, reason)
    ref = _find(records, *reference, provider, "Server", latency_bound_ms)
    if ref is None or ref["value"] is None:
        reason = f"reference {reference[0]}/{reference[1]} has no VALID Server result at the bound"
        return _gate(name, False, None, min_ratio, reason)
    ratio = round(mine["value"] / ref["value"], 4)
    passed = ratio >= min_ratio
    reason = (
        f"{label} serves {ratio:g}x the QPS of {reference[0]}/{reference[1]} at p99 <= "
        f"{latency_bound_ms:g} ms ({'>=' if passed else '<'} {min_ratio:g}x)"
    )
    return _gate(name, passed, ratio, min_ratio, reason)


def _gate(name: str, passed: bool, value: Any, limit: Any, reason: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "limit": limit, "reason": reason}
