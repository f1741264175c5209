"""The main job: `asc-deploy run CONFIG` (what `make bench` calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    config: Annotated[
        Path, typer.Argument(help="Run config YAML, e.g. benchmarks/configs/default.yaml.")
    ],
    force: Annotated[
        list[str] | None,
        typer.Option(
            help="Redo a stage even if cached (repeatable): finetune, profile, select, "
            "prune, screen, recover, evaluate, export, bench, report; 'all' for every stage."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print gates and recommendation as JSON.")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            help="Where the stages run: local (here) or ray (tasks on the Ray cluster at the "
            "config's executor.address, default auto); overrides the config's executor.kind."
        ),
    ] = None,
) -> None:
    """Fine-tune, profile, prune, recover, export, evaluate, bench and report; exit 1 on a gate."""
    import json

    from asc_deploy.config import load_run_config
    from asc_deploy.errors import UserError
    from asc_deploy.pipeline import STAGES, run_pipeline

    stages = set(force or [])
    if "all" in stages:
        stages = set(STAGES)
    unknown = stages - set(STAGES)
    if unknown:
        raise UserError(
            f"--force {', '.join(sorted(unknown))}: unknown stage; stages: {', '.join(STAGES)}"
        )
    cfg = load_run_config(config)
    if executor is not None:
        if executor not in ("local", "ray"):
            raise UserError(f"--executor {executor}: unknown executor; use local or ray")
        cfg.executor = cfg.executor.model_copy(update={"kind": executor})
    results, code = run_pipeline(cfg, stages, config)
    if as_json:
        doc = results.dump()
        print(json.dumps({"gates": doc["gates"], "recommendation": doc["recommendation"]}))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
