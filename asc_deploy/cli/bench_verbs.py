"""Placeholder until this area's verbs land."""

import typer


def register(app: typer.Typer) -> None:
    pass
