"""Local file readers: GLUE TSV quirks, CSV, JSON/JSONL, parquet, SQuAD JSON, and bad input."""

from __future__ import annotations

import json

import pytest

from asc_deploy.data.readers import DataSource, flatten_squad, read_file, read_hub
from asc_deploy.errors import UserError


def test_mrpc_bom_and_unbalanced_quotes(shared_data):
    rows = read_file(shared_data / "mrpc" / "dev.tsv")
    assert len(rows) == 408
    # The BOM would otherwise glue itself to the first column name.
    assert list(rows[0]) == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    # An unbalanced quote stays text instead of swallowing the following lines.
    assert rows[0]["#2 String"].startswith('"The foodservice pie business')
    assert len(read_file(shared_data / "mrpc" / "train.tsv")) == 3668


def test_offline_files_row_counts(shared_data):
    assert len(read_file(shared_data / "sst2" / "dev.tsv")) == 872
    assert len(read_file(shared_data / "rte" / "validation.parquet")) == 277
    mnli = read_file(shared_data / "mnli" / "dev_matched.jsonl")
    assert len(mnli) == 9815 and set(mnli[0]) == {"premise", "hypothesis", "label"}


def test_squad_json_is_flattened_with_titles(shared_data):
    rows = read_file(shared_data / "squad_v2" / "dev-v2.0.json")
    assert len(rows) == 11873
    assert len({r["title"] for r in rows}) == 35
    unanswerable = [r for r in rows if not r["answers"]["text"]]
    assert len(unanswerable) == 5945
    first = rows[0]
    assert first["context"][first["answers"]["answer_start"][0] :].startswith(
        first["answers"]["text"][0]
    )


def test_csv_json_jsonl_parquet(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",1\nbye,0\n')
    assert read_file(tmp_path / "a.csv") == [
        {"text": "hello, world", "label": "1"},
        {"text": "bye", "label": "0"},
    ]
    records = [{"text": "x", "label": 1}, {"text": "y", "label": 0}]
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "b.json").write_text(json.dumps({"data": records}))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_file(tmp_path / "a.json") == records
    assert read_file(tmp_path / "b.json") == records
    assert read_file(tmp_path / "a.jsonl") == records
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    assert read_file(tmp_path / "a.parquet") == records


def test_squad_unanswerable_has_no_answers():
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Paris is in France.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Where?",
                                "answers": [{"text": "France", "answer_start": 12}],
                            },
                            {"id": "q2", "question": "Who?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    rows = flatten_squad(data)
    assert [r["id"] for r in rows] == ["q1", "q2"]
    assert rows[0]["answers"] == {"text": ["France"], "answer_start": [12]}
    assert rows[1]["answers"] == {"text": [], "answer_start": []}
    assert rows[1]["title"] == "T"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.tsv", None, "not found"),
        ("data.xml", "<a/>", "unknown data format"),
        ("empty.jsonl", "\n", "no records"),
        ("header_only.tsv", "text\tlabel\n", "no records"),
        ("ragged.tsv", "text\tlabel\nhello\n", "number of fields"),
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.jsonl", '{"a": 1}\n[1, 2]\n', "one JSON object per line"),
        ("twice.tsv", "label\ttext\tlabel\n0\thi\t1\n", "label appear twice"),
        ("twice.csv", "text,label,text\nhi,1,yo\n", "text appear twice"),
    ],
)
def test_bad_files_are_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_file(path)


def test_data_source_identity_hashes_file_content(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x", "label": 1}\n')
    first = DataSource(path=path).identity()
    path.write_text('{"text": "y", "label": 1}\n')
    assert DataSource(path=path).identity()["sha256"] != first["sha256"]
    hub = DataSource(dataset="glue", config="sst2", split="validation")
    assert hub.identity() == {"dataset": "glue", "config": "sst2", "split": "validation"}


def test_hub_dataset_offline_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="could not load hub dataset 'no-such-org/no-such-dataset'"):
        read_hub("no-such-org/no-such-dataset", None, "train")
