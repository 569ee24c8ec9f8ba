"""jobs/build_index.py killed for real: SIGKILL to the job's process group while it is embedding, then a rerun on
the same output_dir completes the index with every chunk exactly once and the committed documents not embedded
again."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from rayflow.config import load_config
from rayflow.data.build_index import BuildIndexConfig, run
from rayflow.retrieval import Document, Retriever, chunk_document
from tests.conftest import REPO, kill_after_first_part

pytestmark = pytest.mark.slow
N_PAPERS = 48


def test_killed_build_index_resumes_without_embedding_anything_twice(ray_session, tmp_path):
    lines = (REPO / "examples/papers/papers.jsonl").read_text().splitlines()[:N_PAPERS]
    corpus = tmp_path / "papers.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    common = [f"input={corpus}", f"output_dir={out}", "rows_per_block=4", "block_bytes=4096",
              "stage.batch_size=4", "stage.cpus_per_actor=0.5"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen([sys.executable, "jobs/build_index.py", "--config", "configs/build_index.yaml", *common],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    kill_after_first_part(proc, out / "data")
    committed = {r["doc_id"] for p in (out / "data").glob("part-*.parquet") for r in pq.read_table(p).to_pylist()}
    assert 0 < len(committed) < N_PAPERS, "the kill must land mid-run"
    assert not (out / "index/manifest.json").exists()

    cfg = load_config(BuildIndexConfig, REPO / "configs/build_index.yaml", common)
    summary = run(cfg).summary
    # Only the documents without a committed part were embedded by the rerun, and each chunk is there once.
    assert summary["this_run"]["resumed_from"] == len(committed)
    assert summary["this_run"]["documents"] == N_PAPERS - len(committed)
    docs = [Document(**json.loads(line)) for line in lines]
    expected = sorted(c.chunk_id for d in docs for c in chunk_document(d, cfg.index.chunk))
    rows = [r["chunk_id"] for p in (out / "data").glob("part-*.parquet") for r in pq.read_table(p).to_pylist()]
    assert sorted(rows) == expected and summary["chunks"] == len(expected)
    # The index over them answers: each paper asked about by its method's name comes first.
    manifest = json.loads((out / "index/manifest.json").read_text())
    assert manifest["documents"] == N_PAPERS and sum(manifest["chunks_per_shard"]) == len(expected)
    retriever = Retriever.load(out / "index")
    for doc in docs[::8]:
        query = f"What does {doc.metadata['title'].split(' for ')[0]} reach?"
        assert retriever.search(query, 3, "hybrid")[0].doc_id == doc.doc_id
