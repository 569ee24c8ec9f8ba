"""Every shipped config as users run it on a cluster: one real local Ray head, each config submitted with
`ray job submit` (cluster/tour.py, `make tour`, short smoke settings) and finishing SUCCEEDED with its outputs;
then `make demo`'s script against the same head, and its message when the job fails."""

import importlib.util
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import REPO, free_port

spec = importlib.util.spec_from_file_location("tour", REPO / "cluster" / "tour.py")
tour = importlib.util.module_from_spec(spec)
sys.modules["tour"] = tour  # dataclasses resolve the module by name
spec.loader.exec_module(tour)

# The whole tour runs in one module fixture: all 27 submissions, 7-8 minutes on 2 cores (warm caches).
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_every_shipped_config_is_in_the_tour():
    shipped = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert sorted([step.name for step in tour.STEPS] + list(tour.NOT_OFFLINE)) == shipped
    phases = [step.phase for step in tour.STEPS]
    order = ["refine", "decontaminate", "generate", "train", "sweep", "judge", "evaluate"]
    assert phases == sorted(phases, key=order.index), "the tour follows the lifecycle"


@pytest.fixture(scope="module")
def head():
    """A real local head (`ray start --head --block` in its own process group); its dashboard address."""
    import ray

    ray.shutdown()  # the tests' own local session: its CPUs go to the head's jobs (cluster tests run last)
    address = f"http://127.0.0.1:{free_port()}"
    proc = tour.start_head(address)
    yield address
    tour.stop_head(proc)
    assert not tour.cluster_answers(address)


@pytest.fixture(scope="module")
def toured(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    records = tour.run_tour(list(tour.STEPS), head, out)
    tour.print_summary(records, head)
    return out, {r["name"]: r for r in records}


def test_every_job_succeeds_with_its_outputs(toured):
    out, records = toured
    failed = {name: r["submission_id"] for name, r in records.items() if r["status"] != "SUCCEEDED"}
    assert not failed, f"jobs that did not succeed (ray job logs <id>): {failed}"
    for name, r in records.items():
        run = json.loads((out / name / "run.json").read_text())
        assert run["status"] == "ok" and run["config"]["output_dir"] == str(out / name), name
        assert json.loads((out / name / "summary.json").read_text()) == run["results"]["summary"], name
        assert r["report"] is not None, name


def test_prox_lm_config_runs_through_vllm_actors(toured):
    out, _ = toured
    stats = json.loads((out / "prox_refine_lm" / "summary.json").read_text())
    assert stats["documents_in"] == 20 and stats["errors"] == 0
    assert (
        stats["tokens_in"] > 0
        and stats["doc_stage"]["prompt_tokens"] > 0
        and stats["chunk_stage"]["chunks"] >= 20
    )
    rows = pq.read_table(out / "prox_refine_lm" / "data").to_pylist()
    assert len(rows) == 20 and all(r["doc_program"] is not None for r in rows)
    run = json.loads((out / "prox_refine_lm" / "run.json").read_text())
    assert run["config"]["lm"]["doc_engine"]["backend"] == "vllm"


VARIANTS = ["train_ipo", "train_robust", "train_posterior", "train_likelihood", "train_stronger_reference"]


def test_preference_variants_train_with_their_references(toured):
    out, _ = toured
    results = {
        name: json.loads((out / name / "summary.json").read_text()) for name in ["train_dpo", *VARIANTS]
    }
    for name, stats in results.items():
        final = stats["final_metrics"]
        assert final["step"] == 2 and torch.isfinite(torch.tensor(final["loss"])), name
        assert "eval/rewards/accuracies" in final, name
        assert (out / name / "model" / "model.safetensors").is_file(), name
    assert results["train_posterior"]["reference"]["cache"] is None  # nothing to score
    # One shared cache directory: the policy's own model as reference gives dpo, ipo and robust one entry;
    # likelihood scores without the prompt and the stronger reference is another model: entries of their own.
    caches = {name: results[name]["reference"]["cache"] for name in results if name != "train_posterior"}
    assert caches["train_dpo"] == caches["train_ipo"] == caches["train_robust"]
    assert len({caches["train_ipo"], caches["train_likelihood"], caches["train_stronger_reference"]}) == 3
    # At step 1 the policy is its own reference in ipo (h = 0): the loss is (0 - 1/(2β))².
    first = json.loads((out / "train_ipo" / "history.jsonl").read_text().splitlines()[0])
    assert first["h"] == pytest.approx(0.0, abs=1e-3)
    assert first["loss"] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-3)


def test_wspo_runs_every_stage(toured):
    out = toured[0] / "train_wspo"
    stats = json.loads((out / "summary.json").read_text())
    for stage in ("weak_sft", "weak_aligned"):
        assert (out / stage / "model" / "model.safetensors").exists()
        assert stats["stages"][stage]["final_metrics"]["step"] == 2
        assert json.loads((out / stage / "summary.json").read_text())["model_dir"] == str(
            out / stage / "model"
        )
    assert stats["weak_models"]["weak_reference"] == str(out / "weak_sft" / "model")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # At initialisation Δs = 0, so the loss is the weak shift alone: positive once the weak DPO moved the model.
    assert history[0]["wspo/delta_strong"] == pytest.approx(0.0, abs=1e-4)
    assert abs(history[0]["wspo/delta_weak"]) > 0 and history[0]["loss"] > 0
    assert "eval/wspo/scaled_gap" in history[-1]
    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 4  # the strong one


def demo(head: str, out, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAYFLOW_DEMO_OUT": str(out), "RAY_API_SERVER_ADDRESS": head, **env}
    return subprocess.run(
        ["bash", "cluster/demo.sh"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_submits_to_the_head_and_reports_a_failed_job(head, toured, tmp_path):
    proc = demo(head, tmp_path / "demo")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"using the Ray cluster at {head}" in proc.stdout
    assert "20 documents in, 14 kept, 0 errors" in proc.stdout and "before/after" in proc.stdout
    stats = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert stats["documents_in"] == 20 and stats["documents_kept"] == 14 and stats["errors"] == 0
    rows = pq.read_table(tmp_path / "demo" / "data").to_pylist()
    bees = next(r for r in rows if r["id"] == "web-bees")
    assert "Powered by WordPress" in bees["raw_content"] and "Powered by WordPress" not in bees["text"]
    run = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert run["config"]["generator"] == "rules" and run["versions"]["ray"].startswith("2.60")
    # A job that fails (its input is missing) still reaches the message that says where its logs are.
    proc = demo(head, tmp_path / "failed", RAYFLOW_DEMO_OVERRIDES="input=/nonexistent/corpus.jsonl")
    assert proc.returncode == 1
    assert "ended FAILED; logs: ray job logs --address" in proc.stderr, (
        proc.stdout[-2000:] + proc.stderr[-2000:]
    )
