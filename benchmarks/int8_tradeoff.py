"""int8 of one model of a finished run: per-tensor vs per-channel vs the most sensitive layers fp32.

Issue 12's table and trade-off curve, measured on the evaluation split of a finished run's fp32
artifact. If the run did not export int8-mixed (the default run does not), it is built here as the
pipeline would, with the config's `export` settings and its `task.holdout` reserve. Every row is a
real artifact, validated against its fp32 parent as the pipeline validates int8-mixed:

- int8 per-tensor: dynamic int8 with one weight scale per tensor (`--per-tensor`);
- int8 per-channel with the k most sensitive layer groups kept fp32, for each `--keep` k. The
  ranking is the one the run's int8-mixed search measured on *training* calibration data (KL of
  each group quantised alone), so k = 0 is plain per-channel int8-dynamic and the search's
  choice is one point of the curve;
- fp32, the reference every row is paired with.

Accuracy comes with the paired bootstrap CI against the fp32 artifact (the report's "int8 Δ vs
fp32") and its share of fp32 (MLPerf's bert-99 asks >= 99%); latency is p50 at batch 1 x
`--seq`, every artifact in the same interleaved harness run.

    .venv/bin/python benchmarks/int8_tradeoff.py benchmarks/configs/study-mpnet-rte.yaml \
        [--model uncompressed] [--keep 0 1 2 4 8] [--rounds 3] [--seq 128]

Writes the artifacts under <run>/int8-tradeoff/<model>/ and
benchmarks/results/int8_tradeoff_<run>_<model>.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asc_deploy.errors import UserError  # noqa: E402
from asc_deploy.fsutil import write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
console = Console(stderr=True)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the run's config YAML")
    parser.add_argument("--model", default="uncompressed", help="a model the run exported")
    parser.add_argument("--keep", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq", type=int, default=128)
    return parser.parse_args()


def main() -> int:
    args = arguments()
    try:
        doc = measure(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = RESULTS / f"int8_tradeoff_{doc['run']}_{args.model}.json"
    write_json_atomic(out, doc)
    show(doc)
    console.print(f"wrote {out.relative_to(ROOT)}")
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from asc_deploy.config import load_run_config
    from asc_deploy.tasks.presets import build_task

    config = load_run_config(args.config)
    run = ROOT / config.output_dir / config.name
    folder = run / "artifacts" / args.model
    fp32 = folder / "fp32"
    if not (fp32 / "manifest.json").is_file():
        raise UserError(
            f"{folder} has no fp32 artifact; run the config to the end first "
            f"(make bench CONFIG={args.config})"
        )
    if min(args.keep) < 0:
        raise UserError("--keep counts layer groups kept fp32: give numbers >= 0")
    task = build_task(config.task, ROOT)
    work = run / "int8-tradeoff" / args.model
    mixed = folder / "int8-mixed"
    if not (mixed / "manifest.json").is_file():
        mixed = build_mixed(fp32, work / "int8-mixed", config, task)
    built = build_artifacts(fp32, mixed, work, sorted(set(args.keep)), config.export.isa)
    rows = score_rows(built, task)
    latency = bench([Path(r["artifact"]) for r in rows], config, args)
    for row in rows:
        row.update(latency[row["artifact"]])
    return {
        "schema": "asc-deploy.int8-tradeoff/1",
        "run": config.name,
        "model": args.model,
        "task": task.name,
        "eval_examples": rows[0]["examples"],
        "ranking": _manifest(mixed)["transform"]["sensitivity"],
        "search_choice": _manifest(mixed)["transform"]["fp32_groups"],
        "shape": f"1x{args.seq}",
        "host": latency["host"],
        "rows": rows,
    }


def build_mixed(fp32: Path, dest: Path, config, task) -> Path:
    """The int8-mixed artifact the pipeline would have exported, for a run that did not."""
    from asc_deploy.models.loading import load_tokenizer
    from asc_deploy.stages.deploy import build_variant

    with console.status("int8-mixed search (sensitivity, then the reserve's score)"):
        build_variant("int8-mixed", fp32, dest, config.export, task, load_tokenizer(fp32))
    return dest


def build_artifacts(
    fp32: Path, mixed: Path, work: Path, keep: list[int], isa: str
) -> list[dict[str, Any]]:
    """fp32, per-tensor int8, the search's int8-mixed artifact and per-channel int8 with the k
    most sensitive groups fp32."""
    from asc_deploy.deploy.mixed_precision import quantizable_groups
    from asc_deploy.deploy.quantize import quantize_artifact

    ranking = [r["group"] for r in _manifest(mixed)["transform"]["sensitivity"]]
    groups = quantizable_groups(fp32 / "model.onnx", "dynamic")
    total = sum(len(nodes) for nodes in groups.values())
    rows = [{"label": "fp32", "artifact": str(fp32), "fp32_groups": list(groups), "share": 1.0}]
    with console.status("int8 per-tensor"):
        quantize_artifact(fp32, work / "per-tensor", "dynamic", isa=isa, per_channel=False)
    rows.append({"label": "int8 per-tensor", "artifact": str(work / "per-tensor"),
                 "fp32_groups": [], "share": 0.0})  # fmt: skip
    chosen = _manifest(mixed)["transform"]["fp32_groups"]
    rows.append({"label": f"int8-mixed (search: {len(chosen)} fp32)", "artifact": str(mixed),
                 "fp32_groups": chosen,
                 "share": sum(len(groups[g]) for g in chosen) / total})  # fmt: skip
    for k in keep:
        kept = ranking[:k]
        nodes = [n for g in kept for n in groups[g]]
        dest = work / f"per-channel-fp32-{k}"
        with console.status(f"int8 per-channel, {k} most sensitive groups fp32"):
            _keep_fp32(fp32, dest, nodes, kept, isa)
        label = "int8 per-channel" + (f", fp32: {_names(kept)}" if k else "")
        rows.append({"label": label, "artifact": str(dest), "fp32_groups": kept,
                     "share": len(nodes) / total})  # fmt: skip
    return rows


def _names(groups: list[str]) -> str:
    return ", ".join(groups) if len(groups) <= 3 else f"{', '.join(groups[:2])} +{len(groups) - 2}"


def _keep_fp32(fp32: Path, dest: Path, nodes: list[str], groups: list[str], isa: str) -> None:
    """Per-channel dynamic int8 with `nodes` left fp32: an int8-mixed artifact at a fixed k."""
    from asc_deploy.deploy import variants
    from asc_deploy.deploy.quantize import quantize_dynamic_graph, resolve_isa

    chosen = resolve_isa(isa)
    settings = {"mode": "mixed", "base": "dynamic", "isa": chosen, "fp32_groups": groups}

    def transform(src: Path, dst: Path) -> dict[str, Any]:
        return {**quantize_dynamic_graph(src, dst, chosen, True, nodes), "fp32_nodes": nodes}

    variants.derive_variant(fp32, dest, "int8-mixed", settings, transform)


def score_rows(rows: list[dict[str, Any]], task) -> list[dict[str, Any]]:
    """Each artifact's metric on the evaluation split, paired with the fp32 artifact's (row 0)."""
    from asc_deploy.deploy.ort_evaluate import evaluate_onnx
    from asc_deploy.measure.statistics import compare_predictions

    results = [evaluate_onnx(row["artifact"], task) for row in rows]
    reference, metric = results[0].predictions, task.primary_metric
    scored = []
    for row, result in zip(rows, results, strict=True):
        paired = compare_predictions(reference, result.predictions, task.family)[metric]
        scored.append({
            **row,
            "metric": metric,
            "examples": result.num_examples,
            "score": paired.other,
            "pct_of_fp32": 100 * paired.other / paired.reference,
            "delta_points": paired.delta,
            "ci": [paired.ci_low, paired.ci_high],
            "significant": paired.significant,
            "size_mb": Path(row["artifact"], "model.onnx").stat().st_size / 1e6,
        })  # fmt: skip
    return scored


def bench(paths: list[Path], config, args: argparse.Namespace) -> dict[str, Any]:
    """p50 / p95 at batch 1, every artifact in one interleaved harness run."""
    from asc_deploy.measure import harness

    settings = harness.BenchSettings.from_config(
        config.bench, providers=("cpu",), batch_sizes=(1,), sequence_lengths=(args.seq,),
        rounds=args.rounds,
    )  # fmt: skip
    doc = harness.run_bench([harness.onnx_target(p) for p in paths], settings, console.print)
    out: dict[str, Any] = {"host": doc["host"]}
    for m in doc["measurements"]:
        out[m["artifact"]] = {
            "p50_ms": m["round_p50_median_ms"],
            "p95_ms": m["latency_ms"]["p95"],
            "round_spread": m["round_spread"],
            "noisy": m["noisy"],
        }
    return out


def _manifest(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / "manifest.json").read_text())


def show(doc: dict[str, Any]) -> None:
    title = f"{doc['run']} / {doc['model']}: int8 on {doc['eval_examples']} eval examples"
    table = Table(title=title)
    for col in ("variant", "fp32 share", doc["rows"][0]["metric"], "Δ vs fp32 [95% CI]",
                "% of fp32", "MB", f"p50 ms {doc['shape']}"):  # fmt: skip
        table.add_column(col)
    for r in doc["rows"]:
        low, high = r["ci"]
        table.add_row(
            r["label"], f"{r['share']:.0%}", f"{r['score']:.2f}",
            f"{r['delta_points']:+.2f} [{low:+.2f}, {high:+.2f}]", f"{r['pct_of_fp32']:.2f}%",
            f"{r['size_mb']:.1f}", f"{r['p50_ms']:.2f}",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
