"""jobs/build_index.py's workflow on the shared Ray session: papers plus bad rows in, Parquet parts, error
records and a 2-shard index out; a rerun after losing committed parts completes with every row exactly once."""

import json

import pyarrow.parquet as pq
import pytest

from rayflow.config import load_config
from rayflow.data.build_index import BuildIndexConfig, run
from rayflow.retrieval import Document, Retriever, chunk_document
from tests.conftest import REPO

N_PAPERS = 24


@pytest.fixture
def corpus(tmp_path):
    lines = (REPO / "examples/papers/papers.jsonl").read_text().splitlines()[:N_PAPERS]
    bad = [
        "{not json",
        json.dumps({"doc_id": "empty", "text": " \n ", "metadata": {}}),
        json.dumps({"doc_id": "badmeta", "text": "some words", "metadata": "nlp"}),
    ]
    path = tmp_path / "papers.jsonl"
    path.write_text("\n".join(lines[:10] + bad + lines[10:]) + "\n")
    return path, [Document(**json.loads(line)) for line in lines]


def chunk_rows(out):
    rows = [r for p in sorted((out / "data").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return sorted(rows, key=lambda r: r["chunk_id"])


def test_build_index_job_end_to_end_and_resume(ray_session, corpus, tmp_path):
    path, docs = corpus
    out = tmp_path / "out"
    cfg = load_config(
        BuildIndexConfig,
        REPO / "configs/build_index.yaml",
        [
            f"input={path}",
            f"output_dir={out}",
            "rows_per_block=8",
            "stage.batch_size=8",
            "stage.cpus_per_actor=0.5",
        ],
    )
    summary = run(cfg).summary
    expected = sorted(c.chunk_id for d in docs for c in chunk_document(d, cfg.index.chunk))
    assert summary["documents_in"] == N_PAPERS + 3 and summary["documents_indexed"] == N_PAPERS
    assert summary["errors_by_kind"] == {"bad_metadata": 1, "invalid_json": 1, "no_text": 1}
    assert summary["chunks"] == len(expected) and len(summary["chunks_per_shard"]) == 2
    rows = chunk_rows(out)
    assert [r["chunk_id"] for r in rows] == expected
    assert len(rows[0]["embedding"]) == 384 and json.loads(rows[0]["metadata"])["year"]
    errors = [r for p in (out / "errors").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert {(e["row"], e["error"]) for e in errors} == {
        (10, "invalid_json"),
        (11, "no_text"),
        (12, "bad_metadata"),
    }
    manifest = json.loads((out / "index/manifest.json").read_text())
    assert manifest["dimension"] == 384 and manifest["num_shards"] == 2 and manifest["index_type"] == "flat"
    assert manifest["embedder_model"] == "sentence-transformers/all-MiniLM-L6-v2" and manifest["fingerprint"]

    # The index answers: a question about one of the papers finds it.
    retriever = Retriever.load(out / "index")
    doc = docs[3]
    name = doc.metadata["title"].split(" for ")[0]
    assert retriever.search(f"What does {name} reach?", 3, "hybrid")[0].doc_id == doc.doc_id

    # Lose a committed part (a run killed before it landed) and rerun: only its documents are embedded again,
    # and every row is in the output exactly once.
    parts = sorted((out / "data").glob("part-*.parquet"))
    lost = {r["doc_id"] for r in pq.read_table(parts[0]).to_pylist()}
    parts[0].unlink()
    (out / "data" / ".tmp-deadbeef-part-x.parquet").write_bytes(b"half written")
    again = run(cfg).summary
    assert again["this_run"]["documents"] == len(lost) and again["this_run"][
        "resumed_from"
    ] == N_PAPERS + 3 - len(lost)
    assert [r["chunk_id"] for r in chunk_rows(out)] == expected
    assert again["errors"] == 3 and again["chunks"] == summary["chunks"]
