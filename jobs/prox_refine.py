"""ProX refinement: a corpus (JSONL/Parquet) -> doc programs -> chunk programs -> refined Parquet, on Ray Data.

    python jobs/prox_refine.py --config configs/prox_refine.yaml output_dir=/abs/out
    python jobs/prox_refine.py --config configs/prox_refine_lm.yaml input=s3://bucket/rpv2/ text_field=raw_content
    ray job submit --working-dir . -- python jobs/prox_refine.py --config configs/prox_refine.yaml output_dir=/shared/x

Writes data/ and errors/ (Parquet parts), stats.json and run.json to output_dir. Rerunning with the same
output_dir resumes: rows already committed are skipped (overwrite=true starts over). See docs/prox.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.data.prox.output import Output, OutputMismatchError
from rayflow.data.prox.pipeline import ProxRefineConfig, run_prox_refine
from rayflow.data.prox.reader import list_inputs
from rayflow.runinfo import RunRecord


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(ProxRefineConfig, argv, description=__doc__)
    try:
        list_inputs(cfg.input)  # a missing input is a message, before any cluster starts
        refine(cfg)
    except (FileNotFoundError, OutputMismatchError) as err:
        print(f"prox_refine: {err}", file=sys.stderr)
        sys.exit(2)


def refine(cfg: ProxRefineConfig) -> None:
    """Run (or resume) the job on the Ray cluster this process joins, and record run.json and stats.json."""
    output = Output(cfg.output_dir)
    output.fs.create_dir(output.root, recursive=True)
    ray.init()
    # run.json is recorded on local disk; for a remote output_dir it is copied there at the end.
    record_dir = output.root if output.is_local else tempfile.mkdtemp(prefix="prox-run-")
    try:
        with RunRecord(record_dir, cfg, job="prox_refine") as run:
            with run.phase("refine"):
                stats = run_prox_refine(cfg)
            run.set("stats", stats)
            output.write_json("stats.json", stats)
    finally:
        if not output.is_local:
            output.write_json("run.json", json.loads((Path(record_dir) / "run.json").read_text()))
    print(
        f"refined {stats['documents_refined']} of {stats['documents_in']} documents: kept {stats['documents_kept']}, "
        f"{stats['errors']} errors, word retention {stats['word_retention']} -> {cfg.output_dir}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
