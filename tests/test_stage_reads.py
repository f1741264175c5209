"""Every setting a stage declares in `reads` is a real RunConfig path.

`settings_from` resolves the paths only when the stage runs, so a misspelt read would fail deep
into a run, after the stages before it; here it fails at once, naming the stage and the path.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import get_args

from pydantic import BaseModel

import asc_deploy.stages
from asc_deploy.config import RunConfig
from asc_deploy.stages.core import Stage


def registered_stages() -> list[tuple[str, Stage]]:
    """(module.attribute, stage) for every stage declared in a module of asc_deploy.stages."""
    found = []
    for info in pkgutil.iter_modules(asc_deploy.stages.__path__):
        module = importlib.import_module(f"asc_deploy.stages.{info.name}")
        for attribute, value in vars(module).items():
            if isinstance(value, Stage):
                found.append((f"{module.__name__}.{attribute}", value))
    return found


def _section(annotation) -> type[BaseModel] | None:
    """The config section a field holds (`X` or `X | None`); None for a plain value."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def resolves(path: str) -> bool:
    """Whether dotted `path` (core.read_setting's convention) names a field of RunConfig. Read
    on the class, not an instance: an optional section left None (`screening`) still counts."""
    section: type[BaseModel] | None = RunConfig
    for part in path.split("."):
        if section is None or part not in section.model_fields:
            return False
        section = _section(section.model_fields[part].annotation)
    return True


def test_the_walk_finds_the_pipeline_stages():
    names = {stage.name for _, stage in registered_stages()}
    assert {"finetune", "profile", "select", "export", "evaluate", "bench"} <= names


def test_every_declared_read_exists_in_run_config():
    broken = [
        f"stage '{stage.name}' ({where}) reads '{path}'"
        for where, stage in registered_stages()
        for path in stage.reads
        if not resolves(path)
    ]
    assert not broken, "not in RunConfig:\n" + "\n".join(broken)


def test_a_misspelt_read_is_caught():
    assert resolves("asc.epsilon") and resolves("screening.samples") and resolves("task")
    assert not resolves("asc.epsilonn") and not resolves("asc.epsilon.value")
