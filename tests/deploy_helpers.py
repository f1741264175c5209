"""Helpers shared by the deploy tests: real tokenised features of mixed lengths from tiny models."""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "the movie was good",
    "a terrible film with a boring plot and the worst ending ever",
    "great",
    "it was not very funny but the music was the best",
    "this story of love and war is never boring",
    "bad actor",
    "the capital of france is paris and the river is long",
    "what a film",
    "who was the king of england when the war ended and peace came",
    "funny",
]
QUESTIONS = ["what is the capital of france", "who was the king", "when was the war"]
CONTEXTS = [
    "paris is the capital of france and the city has a river",
    "the king of england was born in london and died in the war",
    "the war ended in the year of peace",
]


def classification_features(model_dir: str | Path) -> list[dict]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [dict(tok(s)) for s in SENTENCES]


def qa_features(model_dir: str | Path) -> list[dict]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    pairs = [(q, c) for q in QUESTIONS for c in CONTEXTS]
    return [dict(tok(q, c)) for q, c in pairs]


def features_for(model_dir: str | Path, head: str) -> list[dict]:
    return (
        classification_features(model_dir) if head == "classification" else qa_features(model_dir)
    )


def export_tiny(
    tiny_model_dir, root: Path, arch: str = "bert", head: str = "classification", layers: int = 4
):
    """(model folder, fp32 artifact folder, manifest) for a tiny model."""
    from asc_deploy.deploy.export import export_artifact

    model_dir = tiny_model_dir(arch, head, layers)
    family = "classification" if head == "classification" else "question-answering"
    dest = root / "exports" / f"{arch}-{head}-{layers}" / "fp32"
    manifest = export_artifact(model_dir, dest, family, features_for(model_dir, head))
    return model_dir, dest, manifest


def run_cli(monkeypatch, capsys, *args: str | Path) -> tuple[int, str, str]:
    """`asc-deploy ARGS` in this process: (exit code, stdout, stderr)."""
    import sys

    from asc_deploy.cli import main

    monkeypatch.setattr(sys, "argv", ["asc-deploy", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err
