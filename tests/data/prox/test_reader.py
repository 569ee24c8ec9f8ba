"""Reading corpora without Ray: formats, stable ids, skip sets, and one error record per bad row."""

import pytest

from rayflow.data.prox.reader import ReadOptions, filesystem, list_inputs, read_rows
from tests.data.prox.conftest import BAD_LINES


def read_all(root, **options):
    fs, _ = filesystem(str(root))
    rows = []
    for file in list_inputs(str(root)):
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
    with pytest.raises(FileNotFoundError, match="no .jsonl"):
        list_inputs(str(tmp_path))


def test_a_damaged_file_ends_in_one_error_record(tmp_path):
    import gzip

    payload = gzip.compress(b"".join(b'{"id": "%d", "text": "row %d"}\n' % (i, i) for i in range(2000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    rows = read_all(tmp_path, rows_per_batch=100)
    good, bad = [r for r in rows if not r["error"]], [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["error"] == "unreadable" and "cut.jsonl.gz" in bad[0]["reason"]
    assert [r["row"] for r in good] == list(range(len(good))) and bad[0]["row"] == len(good)
    # A rerun that skips what was committed produces nothing new.
    fs, _ = filesystem(str(tmp_path))
    skip = frozenset(r["row"] for r in rows)
    assert list(read_rows(fs, list_inputs(str(tmp_path))[0], ReadOptions(), skip)) == []
