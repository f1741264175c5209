"""Read task records from local files or a hub dataset id into plain lists of dicts.

Formats come from the file extension: `.tsv` (GLUE style, including MRPC's UTF-8 BOM and
unbalanced quotes), `.csv`, `.json` (a list of records, or the official SQuAD schema), `.jsonl`,
`.parquet`. SQuAD files are flattened to one record per question, with the article title kept so
that a file can be split by article.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asc_deploy.errors import UserError
from asc_deploy.fsutil import sha256_file

Record = dict[str, Any]
FORMATS = (".tsv", ".csv", ".json", ".jsonl", ".parquet")


def read_file(path: str | Path) -> list[Record]:
    """Read every record of a local file; a non-empty list or a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}; check the task's data_dir / file names")
    suffix = path.suffix.lower()
    readers = {
        ".tsv": lambda p: _read_delimited(p, "\t"),
        ".csv": lambda p: _read_delimited(p, ","),
        ".json": _read_json,
        ".jsonl": _read_jsonl,
        ".parquet": _read_parquet,
    }
    if suffix not in readers:
        raise UserError(f"{path}: unknown data format '{suffix}'; use one of {', '.join(FORMATS)}")
    try:
        records = readers[suffix](path)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}); re-save it as UTF-8"
        ) from None
    if not records:
        raise UserError(f"{path}: the file holds no records (empty split)")
    return records


def _read_delimited(path: Path, delimiter: str) -> list[Record]:
    # utf-8-sig drops MRPC's byte-order mark, which would otherwise glue itself to the first
    # column name. GLUE TSVs hold unbalanced quotes (MRPC), so quotes are plain text there.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
        if not reader.fieldnames:
            return []
        repeated = sorted({n for n in reader.fieldnames if reader.fieldnames.count(n) > 1})
        if repeated:
            # DictReader would keep the last such column without a word.
            raise UserError(f"{path}: column(s) {', '.join(repeated)} appear twice in the header")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise UserError(
                    f"{path}:{line_no}: the row has a different number of fields than the header"
                )
            rows.append(dict(row))
    return rows


def _read_jsonl(path: Path) -> list[Record]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_no}: expected one JSON object per line")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if is_squad_json(data):
        return flatten_squad(data)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a list of records, a {{'data': [...]}} or SQuAD JSON")
    return data


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def is_squad_json(data: Any) -> bool:
    """The official SQuAD schema: {"data": [{"title", "paragraphs": [{"context", "qas"}]}]}."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list) or not data["data"]:
        return False
    first = data["data"][0]
    return isinstance(first, dict) and "paragraphs" in first


def flatten_squad(data: dict) -> list[Record]:
    """One record per question: id, title, context, question, answers{text, answer_start}."""
    rows = []
    for article in data["data"]:
        title = article.get("title", "")
        for paragraph in article["paragraphs"]:
            context = paragraph.get("context")
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers", [])
                if qa.get("is_impossible") and answers:  # SQuAD 2.0 keeps those as plausible
                    raise UserError(
                        f"question {qa['id']} is marked is_impossible but has {len(answers)} "
                        "answer(s); move them to plausible_answers or drop is_impossible"
                    )
                rows.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "context": context,
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    }
                )
    return rows


def read_hub(dataset: str, config: str | None, split: str) -> list[Record]:
    """Read one split of a hub dataset with `datasets.load_dataset` (needs a reachable hub)."""
    import datasets

    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as exc:  # offline, unknown id or split: all user-fixable
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not load hub dataset '{dataset}' ({config or 'default'}, split {split}): "
            f"{first}; point task.data_dir / train_file / eval_file at local files instead"
        ) from exc
    rows = ds.to_list()
    if not rows:
        raise UserError(f"hub dataset '{dataset}' split {split} is empty")
    return rows


@dataclass(frozen=True)
class DataSource:
    """Where one split comes from: a local file, or a hub dataset id + config + split."""

    path: Path | None = None
    dataset: str | None = None
    config: str | None = None
    split: str | None = None

    def read(self) -> list[Record]:
        if self.path is not None:
            return read_file(self.path)
        assert self.dataset is not None and self.split is not None
        return read_hub(self.dataset, self.config, self.split)

    def identity(self) -> dict[str, Any]:
        """What the data is, for caches and reports: file name + content hash, or hub id."""
        if self.path is not None:
            sha = sha256_file(self.path) if self.path.is_file() else None
            return {"file": self.path.name, "sha256": sha}
        return {"dataset": self.dataset, "config": self.config, "split": self.split}

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"hub {self.dataset}{'/' + self.config if self.config else ''} [{self.split}]"
