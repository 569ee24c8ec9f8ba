"""ProX on hostile input, through the real job (Ray Data): nothing a corpus holds makes the job fail for good.

Regression tests for issue 18: a field whose JSON type differs between rows of one block and between files, an
integer beyond int64, a lone surrogate, a BOM, a truncated gzip, a file of another suffix; and the temporary
parts a kill leaves behind (one cut short, one complete but never renamed), which a resume must redo.
"""

import gzip
import json
import zlib

import pyarrow.parquet as pq

from rayflow.data.engine_stage import StageConfig
from rayflow.data.prox.pipeline import ProxRefineConfig, run
from tests.data.prox.conftest import SAMPLE, sample_rows

TEXT = "A short document about bees and the flowers they visit in the spring, with enough words to keep."


def committed(out) -> tuple[list[dict], list[dict]]:
    """Data rows and error records as a Parquet reader sees them (temporary files are skipped by readers)."""
    return pq.read_table(out / "data").to_pylist(), pq.read_table(out / "errors").to_pylist()


def keys(data: list[dict], errors: list[dict]) -> list[tuple[str, int]]:
    return sorted(
        [(r["prox"]["source"], r["prox"]["row"]) for r in data] + [(e["source"], e["row"]) for e in errors]
    )


def test_mixed_types_big_integers_and_damaged_files_finish_with_every_row_once(ray_session, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # One file: "meta" is a number, then a string, in the same block (the reproduction), then an object.
    a = [
        {"id": "a0", "text": TEXT, "meta": 1},
        {"id": "a1", "text": TEXT, "meta": "two"},
        {"id": "a2", "text": TEXT, "meta": {"tags": ["x", 3]}, "n": 2**70},
        {"id": "a3", "text": TEXT, "n": -(2**64)},
    ]
    lines = [json.dumps(r) for r in a] + ['{"id": "a4", "text": "lone \\ud800 surrogate"}']
    (corpus / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    # Another file: the same field with other types.
    b = [{"id": "b0", "text": TEXT, "meta": [1.5, None]}, {"id": "b1", "text": TEXT, "meta": True}]
    (corpus / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in b))
    # A gzip cut in the middle: the rows before the damage are kept, the damage is one error record.
    payload = gzip.compress(
        "".join(json.dumps({"id": f"c{i}", "text": TEXT}) + "\n" for i in range(400)).encode()
    )
    cut = payload[: len(payload) // 2]
    (corpus / "c.jsonl.gz").write_bytes(cut)
    complete = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")
    # A suffix the reader does not know, read as JSONL on request.
    (corpus / "d.txt").write_text(json.dumps({"id": "d0", "text": TEXT, "meta": "text file"}) + "\n")

    out = tmp_path / "out"
    cfg = ProxRefineConfig(
        input=str(corpus),
        output_dir=str(out),
        other_files="jsonl",
        tokenizer=None,
        rows_per_block=4,
        fuse_stages=True,
        stage=StageConfig(cpus_per_actor=0.5, batch_size=4),
    )
    stats = run(cfg).summary
    n_rows = len(lines) + len(b) + complete + 1 + 1  # + the gzip's damage record + d.txt
    assert stats["documents_in"] == n_rows and stats["errors_by_kind"] == {
        "invalid_unicode": 1,
        "unreadable": 1,
    }
    data, errors = committed(out)
    assert len(data) == stats["documents_refined"] and len(errors) == stats["errors"]
    expected = (
        [("a.jsonl", i) for i in range(5)]
        + [("b.jsonl", i) for i in range(2)]
        + [("c.jsonl.gz", i) for i in range(complete + 1)]
        + [("d.txt", 0)]
    )
    assert keys(data, errors) == sorted(expected)
    # Every part has one schema, and the input's other fields come back as they were, whatever their type.
    schemas = {pq.read_schema(p) for p in (out / "data").glob("part-*.parquet")}
    assert len(schemas) == 1 and len(list((out / "data").glob("part-*.parquet"))) > 1
    fields = {r["id"]: json.loads(r["input_fields"]) for r in data}
    for row in a[:4] + b:
        assert fields[row["id"]] == {k: v for k, v in row.items() if k not in ("id", "text")}
    assert fields["a0"]["meta"] == 1 and fields["a2"]["n"] == 2**70 and fields["d0"] == {"meta": "text file"}
    assert {e["source"]: e["error"] for e in errors} == {
        "a.jsonl": "invalid_unicode",
        "c.jsonl.gz": "unreadable",
    }


def test_leftover_temporary_parts_are_redone_on_resume(ray_session, tmp_path):
    out = tmp_path / "out"
    cfg = ProxRefineConfig(
        input=str(SAMPLE),
        output_dir=str(out),
        tokenizer=None,
        rows_per_block=4,
        block_bytes=4096,  # the least: one file's blocks commit as several parts
        fuse_stages=True,
        stage=StageConfig(cpus_per_actor=0.5, batch_size=4),
    )
    run(cfg)
    parts = sorted((out / "data").glob("part-*.parquet"))
    assert len(parts) >= 3
    # A kill during a write leaves a part cut short under its temporary name; a kill between the write and the
    # rename leaves a complete one. Neither was committed: their rows must be redone, once.
    cut_short, never_renamed = parts[0], parts[1]
    lost = len(pq.read_table(cut_short)) + len(pq.read_table(never_renamed))
    (out / "data" / f".tmp-{'0' * 32}-{cut_short.name}").write_bytes(cut_short.read_bytes()[:200])
    never_renamed.rename(out / "data" / f".tmp-{'1' * 32}-{never_renamed.name}")
    cut_short.unlink()

    stats = run(cfg).summary
    assert stats["this_run"]["documents"] == lost and stats["this_run"]["resumed_from"] == 20 - lost
    assert not list((out / "data").glob(".tmp-*"))
    data, errors = committed(out)
    assert stats["documents_in"] == len(data) + len(errors) == 20 and not errors
    assert sorted(r["id"] for r in data) == sorted(r["id"] for r in sample_rows())
