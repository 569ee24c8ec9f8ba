"""Committed parts without Ray: one schema whatever the input's fields hold, unwritable rows, temporary files."""

import json

import pyarrow.parquet as pq

from rayflow.data.prox.output import DATA, ERRORS, Output, compute_stats, data_table
from rayflow.data.prox.reader import extra_json
from rayflow.data.prox.stage import STAGE_DEFAULTS


def stage_row(row: int, text: str = "some refined text", **fields) -> dict:
    return {
        **STAGE_DEFAULTS,
        "id": f"doc-{row}",
        "text": text,
        "refined": text,
        "kept": True,
        "source": "in.jsonl",
        "row": row,
        "error": None,
        "reason": "",
        "raw": "",
        "extra": extra_json(fields),
    }


def test_one_schema_whatever_the_fields_hold():
    values = [1, "two", 2**70, {"a": [1, None]}, None, 2.5, [True, "x"]]
    tables = [data_table([stage_row(i, meta=v)]) for i, v in enumerate(values)]
    tables.append(data_table([stage_row(9)]))  # no other field at all
    assert all(t.schema == tables[0].schema for t in tables)
    assert [json.loads(t.column("input_fields")[0].as_py()).get("meta") for t in tables] == values + [None]


def test_an_unwritable_row_becomes_an_error_record(tmp_path):
    output = Output(str(tmp_path))
    output.prepare({"job": 1}, overwrite=False)
    rows = [stage_row(0), stage_row(1, text="lone \ud800 surrogate"), stage_row(2)]
    assert output.write_rows(rows) == (2, 1)
    assert sorted(r["prox"]["row"] for r in pq.read_table(tmp_path / DATA).to_pylist()) == [0, 2]
    [error] = pq.read_table(tmp_path / ERRORS).to_pylist()
    assert (
        error["row"] == 1 and error["error"] == "unwritable" and "row 1: cannot be written" in error["reason"]
    )
    assert error["raw"] == "lone ? surrogate"
    assert output.done_rows() == {"in.jsonl": {0, 1, 2}}


def test_temporary_files_are_never_counted_and_a_resume_removes_them(tmp_path):
    output = Output(str(tmp_path))
    output.prepare({"job": 1}, overwrite=False)
    output.write_rows([stage_row(0), stage_row(1)])
    [part] = (tmp_path / DATA).iterdir()
    # A complete part never renamed, and one cut short by a kill.
    (tmp_path / DATA / f".tmp-{'a' * 32}-part-x.parquet").write_bytes(part.read_bytes())
    (tmp_path / DATA / f".tmp-{'b' * 32}-part-y.parquet").write_bytes(part.read_bytes()[:100])
    (tmp_path / ERRORS / f".tmp-{'c' * 32}-part-z.parquet").write_bytes(b"PAR1")
    assert output.parts(DATA) == [part.as_posix()] and output.parts(ERRORS) == []
    assert output.done_rows() == {"in.jsonl": {0, 1}} and compute_stats(output)["documents_in"] == 2
    output.prepare({"job": 1}, overwrite=False)
    assert [p.name for p in (tmp_path / DATA).iterdir()] == [part.name] and not any(
        (tmp_path / ERRORS).iterdir()
    )
