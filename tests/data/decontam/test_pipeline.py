"""The decontamination job on Ray Data: the shipped config finds every planted copy, verdicts equal
`check_example` under a leaky Bloom filter with bad rows in the corpus, a killed job resumes exactly once,
Min-K% through the engine layer, evidence filed in the database."""

import json
import os
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from rayflow.config import load_config
from rayflow.data.decontam import RULES, EvidenceDB, check_example
from rayflow.data.decontam.evalsets import EvalSetConfig
from rayflow.data.decontam.minkprob import MinKTask, min_k_nll
from rayflow.data.decontam.pipeline import DecontamConfig, run
from rayflow.data.engine_stage import EngineStage
from rayflow.llm import EngineConfig, build_engine, load_tokenizer
from tests.conftest import REPO, kill_after_first_part

WORDS = ["river", "stone", "light", "cloud", "north", "window", "paper", "garden", "silver", "market", "music", "orange", "table", "winter"]


def corpus_texts(directory) -> list[str]:
    texts = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip():
                texts.append(row["text"])
    return texts


def assert_verdicts_equal_check_example(out, eval_rows, corpus):
    verdicts = pq.read_table(out / "verdicts.parquet").to_pylist()
    assert len(verdicts) == len(eval_rows)
    for row, example in zip(verdicts, eval_rows):
        for rule in RULES:
            expected = check_example(example["question"] + "\n" + example["answer"], corpus, rule)
            assert (row[f"{rule}_score"], row[f"{rule}_dirty"]) == (expected.score, expected.dirty), (rule, row)
        assert row["coverage_bucket"] == check_example(example["question"] + "\n" + example["answer"],
                                                       corpus, "coverage").bucket  # fmt: skip


def write_random_case(tmp_path, n_files: int, docs_per_file: int, seed: int = 0, bad_lines: bool = False):
    """Eval examples of 0-30 tokens (short ones included) and a corpus planting pieces of them: whole, partial,
    upper-cased with punctuation, and split across two consecutive documents."""
    rnd = random.Random(seed)
    examples = []
    for i in range(14):
        q = " ".join(rnd.choice(WORDS) for _ in range(rnd.choice([0, 2, 5, 9, 12, 13, 16, 24])))
        a = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 6)))
        examples.append({"id": f"e{i}", "question": q, "answer": a, "split": rnd.choice(["test", "dev"])})
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in range(n_files):
        lines = []
        for d in range(docs_per_file):
            words = [rnd.choice(WORDS + ["other", "words"]) for _ in range(rnd.randint(5, 40))]
            src = (rnd.choice(examples)["question"] + " " + rnd.choice(examples)["answer"]).split()
            kind = rnd.random()
            if kind < 0.3:
                piece = src[: rnd.randint(0, len(src))]
                words[3:3] = [w.upper() + rnd.choice(["", ",", "!"]) for w in piece]
            elif kind < 0.4 and d > 0:  # split: the first half ends the previous document
                half = len(src) // 2
                prev = json.loads(lines[-1])
                lines[-1] = json.dumps({**prev, "text": prev["text"] + " " + " ".join(src[:half])})
                words = src[half:] + words
            lines.append(json.dumps({"id": f"f{f}-d{d}", "text": " ".join(words)}))
        if bad_lines and f == 0:
            lines[1:1] = ["{broken json", json.dumps({"id": "no-text"})]
        (corpus / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return examples, corpus


def test_shipped_config_finds_every_planted_copy_and_no_paraphrase(ray_session, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = load_config(DecontamConfig, REPO / "configs" / "decontaminate.yaml", [f"output_dir={out}"])
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository, as when the job runs
    summary = run(cfg).summary
    expected = json.loads((REPO / "examples" / "decontam" / "planted.json").read_text())
    verdicts = {f"{r['dataset']}/{r['id']}": r for r in pq.read_table(out / "verdicts.parquet").to_pylist()}
    assert verdicts.keys() == expected.keys()
    for key, want in expected.items():
        got = verdicts[key]
        assert (got["gpt3_dirty"], got["palm_dirty"], got["coverage_bucket"]) == (
            want["gpt3"], want["palm"], want["coverage"]), key  # fmt: skip
        assert (got["n_docs"] > 0) == (want["planted"] is not None and "paraphrase" not in want["planted"]), key
    assert verdicts["rayflow-qa/qa-1"]["doc_ids"] == ["doc-verbatim"]
    assert verdicts["rayflow-qa/qa-7"]["longest_match"] == verdicts["rayflow-qa/qa-7"]["n_tokens"] == 8
    # Min-K% ran on every example, beside the data-based verdicts.
    assert all(r["min_k_nll"] > 0 and r["min_k_suspected"] is not None for r in verdicts.values())
    assert summary["documents_scanned"] == 17 and summary["errors"] == 0 and summary["dirty"]["gpt3"] == 7
    # The cleaned corpus: the verbatim copy is cut out, the clean documents are kept whole.
    cleaned = pq.read_table(out / "cleaned").to_pylist()
    assert not any("Which gas do green plants" in r["text"] for r in cleaned)
    assert {r["id"] for r in cleaned} >= {f"doc-filler-{i}" for i in range(8)}
    # Evidence: one data-based and one model-based row per set, split percentages from the verdicts.
    db = EvidenceDB(summary["evidence_db"])
    rows = {(r["Evaluation Dataset"], r["Approach"]): r for r in db.query()}
    qa = rows[("rayflow-qa", "data-based")]
    assert (qa["Contaminated Source"], qa["Model or corpus"], qa["method"]) == ("rayflow-sample-corpus", "corpus", "gpt3")
    assert (qa["Train Split"], qa["Development Split"], qa["Test Split"]) == ("", "50.00", "66.67")
    assert rows[("rayflow-zh", "model-based")]["Contaminated Source"] == "tiny:tiny"
    assert len(db.matches(summary["run_id"])) == 11
    assert db.runs()[0]["finished_at"] is not None
    db.close()
    assert "| rayflow-qa | test | 6 | 4 |" in (out / "report.md").read_text()


def test_job_verdicts_equal_check_example_with_a_leaky_filter_and_bad_rows(ray_session, tmp_path):
    examples, corpus = write_random_case(tmp_path, n_files=3, docs_per_file=25, bad_lines=True)
    cfg = DecontamConfig(
        eval_sets=[EvalSetConfig(name="rnd", path=str(tmp_path / "eval.jsonl"))],
        corpus=str(corpus),
        output_dir=str(tmp_path / "out"),
        bloom_fpr=0.5,
        rows_per_block=7,
        block_bytes=4096,
        scan={"actors": 2, "cpus_per_actor": 0.5, "batch_size": 5},
    )
    summary = run(cfg).summary
    assert summary["documents_scanned"] == 75 and summary["errors_by_kind"] == {"invalid_json": 1, "no_text": 1}
    assert_verdicts_equal_check_example(tmp_path / "out", examples, corpus_texts(corpus))
    assert 0 < summary["dirty"]["gpt3"] < len(examples)


@pytest.mark.slow
def test_killed_job_resumes_with_every_document_exactly_once(ray_session, tmp_path):
    examples, corpus = write_random_case(tmp_path, n_files=6, docs_per_file=60, seed=1)
    out = tmp_path / "out"
    common = [f"eval_sets=[{{name: rnd, path: {tmp_path / 'eval.jsonl'}}}]", f"corpus={corpus}",
              f"output_dir={out}", "rows_per_block=6", "block_bytes=4096", "scan.batch_size=6"]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen([sys.executable, "jobs/decontaminate.py", *common], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    kill_after_first_part(proc, out / "data")
    committed = sum(len(pq.read_table(p)) for p in (out / "data").glob("part-*.parquet"))
    assert 0 < committed < 360, "the kill must land mid-scan"
    assert not (out / "summary.json").exists()

    cfg = load_config(DecontamConfig, None, common)
    summary = run(cfg).summary
    assert summary["this_run"]["resumed_from"] >= committed
    keys = [(r["source"], r["row"]) for r in pq.read_table(out / "data", columns=["source", "row"]).to_pylist()]
    assert len(keys) == len(set(keys)) == 360
    assert_verdicts_equal_check_example(out, examples, corpus_texts(corpus))


def test_min_k_scores_the_example_after_bos_through_the_engine_layer(tiny_model):
    assert min_k_nll([-1.0, -5.0, -3.0, -0.5, -2.0], 0.2) == 5.0
    assert min_k_nll([-1.0, -5.0, -3.0, -0.5, -2.0], 0.4) == 4.0
    assert min_k_nll([-2.0], 0.2) == 2.0  # at least one token
    engine_cfg = EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=64)
    tok = load_tokenizer(engine_cfg)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    stage = EngineStage([MinKTask(engine_cfg, 0.2, start)])
    import pyarrow as pa

    texts = ["The sky is blue over the sea.", "word " * 200]
    out = stage(pa.table({"key": [0, 1], "text": texts})).to_pylist()
    engine = build_engine(engine_cfg)
    scored = engine.score([[start]], [texts[0]])[0]
    assert out[0]["min_k_nll"] == pytest.approx(min_k_nll(scored.logprobs, 0.2), abs=1e-6)
    assert out[0]["min_k_tokens"] == len(scored.logprobs) and out[0]["error"] is None
    # Longer than the context: that example alone gets an error, not the batch.
    assert out[1]["min_k_nll"] is None and out[1]["error"]
    stage.close()
    engine.close()
