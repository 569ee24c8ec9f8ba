"""Reading corpora without Ray: formats, stable ids, skip sets, and one error record per bad row."""

import json

import pytest

from rayflow.data.prox.reader import ReadOptions, filesystem, list_inputs, read_rows
from tests.data.prox.conftest import BAD_LINES


def read_all(root, other_files="skip", **options):
    fs, _ = filesystem(str(root))
    rows = []
    for file in list_inputs(str(root), other_files):
        for batch in read_rows(fs, file, ReadOptions(**options)):
            rows.extend(batch)
    return rows


def test_every_row_is_a_document_or_an_error_record(messy_corpus):
    rows = read_all(messy_corpus, max_line_bytes=4096, rows_per_batch=3)
    assert [f.source for f in list_inputs(str(messy_corpus))] == ["a.jsonl.gz", "b.parquet", "c.jsonl"]
    good = [r for r in rows if r["error"] is None]
    bad = {r["raw"][:12] if r["error"] != "line_too_long" else "huge": r for r in rows if r["error"]}
    assert len(good) == 8 + 12 + 1 and len(bad) == len(BAD_LINES)
    kinds = sorted(r["error"] for r in rows if r["error"])
    assert kinds == [
        "invalid_json",
        "line_too_long",
        "no_text",
        "no_text",
        "no_text",
        "not_object",
        "not_utf8",
    ]
    # Error records name the file, the row (0-based line; line 1 is blank) and the problem.
    latin = next(r for r in rows if r["error"] == "not_utf8")
    assert latin["source"] == "c.jsonl" and latin["row"] == 7 and "line 8" in latin["reason"]
    assert next(r for r in rows if r["error"] == "line_too_long")["raw"] == ""
    # Ids: the input's, or <file>:<row>; other fields travel as JSON.
    no_id = next(r for r in good if r["source"] == "c.jsonl")
    assert no_id["id"] == "c.jsonl:0" and '"url"' in no_id["extra"]
    assert '"lang": "en"' in next(r for r in good if r["source"] == "b.parquet")["extra"]


def test_skip_set_and_text_field(messy_corpus):
    fs, _ = filesystem(str(messy_corpus))
    file = list_inputs(str(messy_corpus))[0]
    rows = [r for batch in read_rows(fs, file, ReadOptions(), frozenset({0, 2})) for r in batch]
    assert [r["row"] for r in rows] == [1, 3, 4, 5, 6, 7]
    rows = [r for batch in read_rows(fs, file, ReadOptions(text_field="url")) for r in batch]
    assert rows[0]["text"].startswith("https://") and '"text"' in rows[0]["extra"]


def test_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_inputs(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl.*skipped: notes\.txt; other_files=jsonl"):
        list_inputs(str(tmp_path))


def test_a_truncated_gzip_keeps_every_row_before_the_damage(tmp_path):
    import gzip
    import zlib

    payload = gzip.compress(b"".join(b'{"id": "%d", "text": "row %d"}\n' % (i, i) for i in range(2000)))
    cut = payload[: len(payload) // 2]
    (tmp_path / "cut.jsonl.gz").write_bytes(cut)
    complete_lines = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")
    assert 0 < complete_lines < 2000
    rows = read_all(tmp_path, rows_per_batch=100)
    good, bad = [r for r in rows if not r["error"]], [r for r in rows if r["error"]]
    # Every line the damaged stream still holds whole is a row; the damage is one error record after them.
    assert [r["row"] for r in good] == list(range(complete_lines))
    assert len(bad) == 1 and bad[0]["error"] == "unreadable" and bad[0]["row"] == complete_lines
    assert "cut.jsonl.gz" in bad[0]["reason"] and "truncated" in bad[0]["reason"]
    # A rerun that skips what was committed produces nothing new.
    fs, _ = filesystem(str(tmp_path))
    skip = frozenset(r["row"] for r in rows)
    assert list(read_rows(fs, list_inputs(str(tmp_path))[0], ReadOptions(), skip)) == []


def test_bom_unicode_and_unusual_json_cost_at_most_their_row(tmp_path):
    big = 2**70
    lines = [
        b'\xef\xbb\xbf{"id": "bom", "text": "first line after a byte-order mark"}',
        b'{"id": "mixed-1", "text": "a", "meta": 1, "n": ' + str(big).encode() + b"}",
        b'{"id": "mixed-2", "text": "b", "meta": "two", "deep": {"x": [1, "y", null, 2.5]}}',
        b'{"id": "lone", "text": "broken \\ud800 surrogate"}',
        b'{"id": "\\udfff", "text": "surrogate in the id"}',
        b'{"id": "kept", "text": "a surrogate in another field is kept", "note": "\\ud800 caf\xc3\xa9"}',
        b'{"id": "digits", "text": "x", "n": ' + b"9" * 5000 + b"}",
        b"[" * 100_000,
        b'{"id": "last", "text": "the rest of the file is read"}',
    ]
    (tmp_path / "a.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    rows = {r["row"]: r for r in read_all(tmp_path)}
    assert rows[0]["id"] == "bom" and rows[0]["error"] is None
    assert json.loads(rows[1]["extra"]) == {"meta": 1, "n": big}
    assert json.loads(rows[2]["extra"]) == {"meta": "two", "deep": {"x": [1, "y", None, 2.5]}}
    assert rows[3]["error"] == rows[4]["error"] == "invalid_unicode"
    assert "'text'" in rows[3]["reason"] and "'id'" in rows[4]["reason"]
    # Escaped where it has to be, the value survives: valid UTF-8 that reads back to the same string.
    assert rows[5]["error"] is None and json.loads(rows[5]["extra"]) == {"note": "\ud800 caf\u00e9"}
    rows[5]["extra"].encode("utf-8")
    assert rows[6]["error"] == rows[7]["error"] == "invalid_json" and "4300 digits" in rows[6]["reason"]
    assert rows[8]["id"] == "last" and rows[8]["error"] is None


def test_files_of_unknown_suffix_are_named_or_read_as_jsonl(tmp_path, caplog):
    (tmp_path / "a.jsonl").write_text('{"text": "known"}\n')
    (tmp_path / "b.txt").write_text('{"text": "unknown suffix"}\n')
    (tmp_path / "c.csv").write_text("text\nx\n")
    (tmp_path / "_SUCCESS").write_text("")
    with caplog.at_level("WARNING", logger="rayflow.data.prox.reader"):
        assert [f.source for f in list_inputs(str(tmp_path))] == ["a.jsonl"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "2 file(s)" in warning and "b.txt, c.csv" in warning and "other_files=jsonl" in warning
    rows = read_all(tmp_path, other_files="jsonl")
    assert [(r["source"], r["error"]) for r in rows] == [
        ("a.jsonl", None),
        ("b.txt", None),
        ("c.csv", "invalid_json"),
        ("c.csv", "invalid_json"),
    ]
