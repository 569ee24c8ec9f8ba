"""Fixtures for the ProX tests: the shipped sample corpus, sharded copies of it, and a corpus of bad rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import REPO

SAMPLE = REPO / "examples" / "web_corpus.jsonl"


def sample_rows() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def write_shards(directory: Path, n_files: int, copies_per_file: int) -> int:
    """Copies of the sample corpus with unique ids over `n_files` JSONL files; returns the row count."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = sample_rows()
    n = 0
    for f in range(n_files):
        lines = []
        for c in range(copies_per_file):
            for r in rows:
                lines.append(json.dumps({**r, "id": f"{r['id']}-{f}-{c}"}))
                n += 1
        (directory / f"shard-{f:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return n


BAD_LINES = [
    b"{not json",
    b'["a list"]',
    b'{"id": "no-text"}',
    b'{"id": "empty", "text": "   "}',
    b'{"id": "number", "text": 42}',
    b'{"id": "latin1", "text": "caf\xe9 cr\xe8me"}',
    b'{"id": "huge", "text": "' + b"x" * 5000 + b'"}',
]


@pytest.fixture
def messy_corpus(tmp_path) -> Path:
    """A directory with good rows in .jsonl.gz and Parquet, plus one bad row of every kind in a JSONL file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "corpus"
    root.mkdir()
    rows = sample_rows()
    with gzip.open(root / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[:8]))
    pq.write_table(pa.Table.from_pylist([{**r, "lang": "en"} for r in rows[8:]]), root / "b.parquet")
    good = json.dumps({"text": rows[0]["text"], "url": "https://example.org/no-id"}).encode()
    (root / "c.jsonl").write_bytes(b"\n".join([good, b""] + BAD_LINES) + b"\n")
    return root
