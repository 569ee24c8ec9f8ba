"""Index building: documents (JSONL/Parquet, text + metadata) -> chunks -> embeddings -> faiss + BM25 shards.

    python jobs/build_index.py --config configs/build_index.yaml output_dir=/abs/out
    python jobs/build_index.py input=corpus/ num_shards=4 index.dense.kind=hnsw stage.actors=2
    ray job submit --working-dir . -- python jobs/build_index.py --config configs/build_index.yaml output_dir=/shared/x

Writes data/ and errors/ (Parquet parts: one row per chunk with its embedding, and error records), index/
(manifest.json + shard-NNNNN/), summary.json and run.json to output_dir. Rerunning with the same output_dir
resumes: documents already embedded are skipped (overwrite=true starts over). See docs/retrieval.md.
"""

from __future__ import annotations

from rayflow.data.build_index import BuildIndexConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(BuildIndexConfig, run, check=check, description=__doc__)
