"""The scan's corpus reader: whatever a file holds, it yields exactly the rows ProX's reader yields (same keys,
ids, texts and error kinds), reading clean chunks with Arrow and handing the rest of a file to ProX (no Ray)."""

import codecs
import json

import pyarrow.compute as pc
import pytest

from rayflow.data.decontam import reading
from rayflow.data.prox.reader import ReadOptions, filesystem, list_inputs, read_rows

OPTIONS = ReadOptions(max_line_bytes=3000, max_text_chars=100)
GOOD = [json.dumps({"id": f"d{i}", "text": f"document {i} text ÿ 東京", "meta": {"k": [i]}}) for i in range(30)]


def rows_of(path, chunk_bytes, skip=frozenset()):
    fs, _ = filesystem(str(path))
    (file,) = list_inputs(str(path))
    fields = ["source", "row", "id", "text", "error"]
    got = [r for t in reading.read_chunks(fs, file, OPTIONS, skip, chunk_bytes) for r in t.select(fields).to_pylist()]
    want = [{k: r[k] for k in fields} for b in read_rows(fs, file, OPTIONS, skip) for r in b]
    return got, want


@pytest.mark.parametrize(
    "bad",
    [
        "",  # blank lines are not rows
        "   \t",
        "{broken json",
        "[1, 2]",
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "empty", "text": "  \u3000 "}),
        json.dumps({"id": 7, "text": "an integer id"}),
        json.dumps({"id": 7.5, "text": "a float id"}),
        json.dumps({"id": True, "text": "a boolean id"}),
        json.dumps({"text": "no id at all"}),
        json.dumps({"id": "x", "text": 5}),
        json.dumps({"id": "long", "text": "x" * 150}),  # over max_text_chars
        json.dumps({"id": "huge", "text": "y" * 3500}),  # over max_line_bytes
        '{"id": "sur", "text": "a lone \\ud800 surrogate"}',
        '{"id": "dup", "text": "first", "text": "second"}',
        '{"id": "two"} {"id": "objects", "text": "on one line"}',
        '{"id": "deep", "text": "t", "x": ' + "[" * 1100 + "]" * 1100 + "}",
        '{"id": "nan", "text": "t", "x": NaN}',
    ],
)
def test_every_line_reads_as_prox_reads_it(tmp_path, bad):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(GOOD[:10] + [bad] + GOOD[10:]) + "\n", encoding="utf-8")
    for chunk_bytes in (64, 700, 1 << 20):  # a line per chunk, a few, the whole file
        got, want = rows_of(path, chunk_bytes)
        assert got == want


def test_clean_files_are_read_by_arrow_and_skips_apply(tmp_path, monkeypatch):
    path = tmp_path / "c.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + ("\n".join(GOOD) + "\n\n  \n").encode())  # BOM, trailing blank lines
    monkeypatch.setattr(reading, "_prox_chunks", lambda *a: pytest.fail("a clean file fell back to ProX"))
    got, want = rows_of(path, 700, skip=frozenset({0, 5, 29}))
    assert got == want and len(got) == 27
    path.write_bytes(b"\n".join(g.encode() for g in GOOD))  # no newline at the end
    got, want = rows_of(path, 700)
    assert got == want and len(got) == 30


def test_a_bad_line_hands_the_rest_of_the_file_to_prox(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(GOOD[:10] + ["{bad"] + GOOD[10:]) + "\n", encoding="utf-8")
    fs, _ = filesystem(str(path))
    (file,) = list_inputs(str(path))
    tables = list(reading.read_chunks(fs, file, OPTIONS, frozenset({12}), 700))
    rows = [r for t in tables for r in t.column("row").to_pylist()]
    assert rows == [r for r in range(31) if r != 12]  # each row once, in order
    assert pc.sum(pc.is_valid(tables[-1].column("error"))).as_py() == 1


def test_a_line_that_is_not_utf8_reads_as_prox_reads_it(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [g.encode() for g in GOOD]
    lines[4] = b'{"id": "latin1", "text": "caf\xe9"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    got, want = rows_of(path, 700)
    assert got == want and [r["error"] for r in got if r["error"]] == ["not_utf8"]
