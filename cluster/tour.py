"""`make tour`: every shipped offline config, submitted with `ray job submit` to one Ray cluster in the order of
the alignment lifecycle (refine, decontaminate, generate, train, sweep, judge, evaluate), then a one-screen summary
that links each job's report.

    python cluster/tour.py [--address http://127.0.0.1:8265] [--out outputs/tour] [--only NAME ...] [--full]

Each job runs with short smoke settings (a few steps, one worker; `--full` drops them and runs the configs as
shipped). With no cluster answering at --address, a local head starts on 127.0.0.1 and stops at the end. Three
jobs are in flight at a time, and never two that start a vLLM engine (one engine per machine on CPUs).
Exit status 0 when every job SUCCEEDED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADDRESS = os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")
# Uploaded with each job as its working directory (Ray caches it by content): the code, configs and examples.
EXCLUDES = [".venv", ".git", "outputs", ".cache", "benchmarks/results", "docs/*.png", "**/__pycache__"]
# What the jobs' processes need from the submitting environment (Ray passes the rest of the head's).
PASS_ENV = [
    "RAYFLOW_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "DS_ACCELERATOR",
    "TOKENIZERS_PARALLELISM",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
]


@dataclass(frozen=True)
class Step:
    """One submission: `jobs/<job>` with `configs/<name>.yaml`, its smoke settings and what it produces."""

    phase: str
    name: str
    job: str
    smoke: tuple[str, ...] = ()
    vllm: bool = False  # starts a vLLM engine: never beside another one
    needs: tuple[str, ...] = ()  # steps whose outputs it reads (`{out}` in smoke settings)


ONE_WORKER = (
    "train.num_workers=1",
    "train.cpus_per_worker=0.5",
    "train.eval_every=0",
    "train.checkpoint_every=0",
)
SWEEP = (
    "grid.betas=[0.1]",
    "train.max_steps=2",
    "train.cpus_per_worker=0.5",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "tune.cpus_per_trial=0.25",
    "precompute.cache_dir={out}/logps-cache",
    "evaluation.max_prompts=10",
    "evaluation.lc_min_samples=20",
    "evaluation.sampling.max_tokens=12",
)
PREFERENCE = (
    "train.max_steps=2",
    *ONE_WORKER,
    "precompute.cache_dir={out}/logps-cache",
    "precompute.cpus_per_actor=0.5",
)

STEPS: tuple[Step, ...] = (
    Step("refine", "prox_refine", "prox_refine.py"),
    Step("refine", "prox_refine_lm", "prox_refine.py", vllm=True),
    Step(
        "refine",
        "prox_annotate",
        "prox_annotate.py",
        ("generated.train=48", "generated.heldout=12", "stage.actors=1"),
    ),
    Step(
        "refine",
        "train_prox_refiner",
        "train_prox_refiner.py",
        ("data={out}/prox_annotate", "train.max_steps=2", "train.cpus_per_worker=1", "eval_examples=8"),
        needs=("prox_annotate",),
    ),
    Step(
        "refine",
        "eval_prox_refiner",
        "eval_prox_refiner.py",
        ("data={out}/prox_annotate",),
        needs=("prox_annotate",),
    ),
    Step("decontaminate", "decontaminate", "decontaminate.py"),
    Step("generate", "generate", "generate.py", vllm=True),
    Step("train", "train_sft", "train_sft.py", ("train.max_steps=2", *ONE_WORKER)),
    Step("train", "train_dpo", "train_preference.py", PREFERENCE),
    # ipo and robust score the pairs with the same reference as dpo: after it, they read its cache.
    Step("train", "train_ipo", "train_preference.py", PREFERENCE, needs=("train_dpo",)),
    Step("train", "train_robust", "train_preference.py", PREFERENCE, needs=("train_dpo",)),
    Step("train", "train_likelihood", "train_preference.py", PREFERENCE),
    Step("train", "train_posterior", "train_preference.py", PREFERENCE),
    # The shipped reference pre-trains tiny:small@100 (a minute of CPU); the smoke scores with tiny:small.
    Step(
        "train",
        "train_stronger_reference",
        "train_preference.py",
        (*PREFERENCE, "reference.model=tiny:small"),
    ),
    Step(
        "train",
        "train_wspo",
        "train_preference.py",
        (*PREFERENCE, "wspo.weak_sft_train.max_steps=2", "wspo.weak_dpo_train.max_steps=2"),
    ),
    Step(
        "train",
        "train_judge",
        "train_judge.py",
        (
            "rounds=1",
            "samples_per_item=2",
            "max_tokens=32",
            "sft_train.max_steps=2",
            "dpo_train.max_steps=2",
            "precompute.cpus_per_actor=0.5",
        ),
    ),
    Step(
        "train",
        "train_vlm",
        "train_vlm.py",
        ("train.max_steps=2", "train.cpus_per_worker=0.5", "data.synthetic_samples=64"),
    ),
    Step(
        "train",
        "train_vlm_zero",
        "train_vlm.py",
        ("train.max_steps=2", "train.cpus_per_worker=0.5", "data.synthetic_samples=64"),
    ),
    Step("sweep", "sweep_beta", "sweep_beta.py", SWEEP),
    # One trial per reference kind (the policy's own, a stronger model, reference-free), two at a time.
    Step(
        "sweep",
        "sweep_beta_full",
        "sweep_beta.py",
        (
            *SWEEP,
            "grid.stronger_reference_betas=[0.1]",
            "grid.posterior_betas=[100.0]",
            "grid.seeds=[0]",
            "tune.max_concurrent_trials=2",
            (
                'references={sft: {kind: model, backend: hf}, stronger: {kind: model, model: "tiny:small",'
                " backend: hf}, posterior: {kind: posterior}}"
            ),
        ),
    ),
    Step("judge", "eval_safety", "eval_safety.py", vllm=True),
    Step("evaluate", "build_index", "build_index.py"),
    Step("evaluate", "eval_rag", "eval_rag.py"),
    Step("evaluate", "make_conflicts", "make_conflicts.py"),
    Step("evaluate", "eval_conflicts", "eval_conflicts.py"),
    Step(
        "evaluate",
        "train_agent_policy",
        "train_agent_policy.py",
        ("rounds=2", "sessions_per_round=20", "workers=1"),
    ),
    Step("evaluate", "agent_eval", "agent_eval.py", ("max_items=1", "turns=2")),
)
# Shipped configs that need what no offline machine has; the tour leaves them out, saying why.
NOT_OFFLINE = {
    "eval_safety_reference": "the released Safety-J model (liuyx0903/Safety-J_v5) on a GPU",
}


def entrypoint(step: Step, out: Path, full: bool) -> list[str]:
    settings = [] if full else [s.replace("{out}", str(out)) for s in step.smoke]
    return ["python", f"jobs/{step.job}", "--config", f"configs/{step.name}.yaml", f"output_dir={out / step.name}",
            *settings]  # fmt: skip


def ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def cluster_answers(address: str) -> bool:
    """Whether a Ray dashboard (the job API's server) answers at `address`."""
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=5) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def submit(step: Step, address: str, out: Path, full: bool, tag: str) -> str:
    """`ray job submit --no-wait`; returns the submission id. Retries while a new head has no job agent yet."""
    sid = f"tour-{step.name}-{tag}"
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    runtime_env = {"excludes": EXCLUDES, "env_vars": env}
    argv = [ray_cli(), "job", "submit", "--no-wait", "--address", address, "--submission-id", sid,
            "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env), "--",
            *entrypoint(step, out, full)]  # fmt: skip
    for attempt in range(30):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return sid
        # A head that has just started may not have registered its job agent; that refusal creates no job.
        if "No available agent" not in proc.stdout + proc.stderr or attempt == 29:
            raise RuntimeError(f"ray job submit {step.name} failed:\n{proc.stdout}{proc.stderr}")
        time.sleep(2)
    raise AssertionError("unreachable")


def report_of(directory: Path) -> Path | None:
    """The file a person opens first: a Markdown report, else summary.json."""
    for pattern in ("report.md", "*.md", "summary.json"):
        found = sorted(directory.glob(pattern))
        if found:
            return found[0]
    return None


def run_tour(steps: list[Step], address: str, out: Path, full: bool = False, parallel: int = 3) -> list[dict]:
    """Submit `steps` in order, at most `parallel` in flight and one vLLM job at a time; wait for all.

    Returns one record per step: name, phase, submission id, status, wall seconds, output dir, report path.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    tag = time.strftime("%Y%m%d-%H%M%S")
    pending, running, records = list(steps), {}, {}
    done: set[str] = set()
    while pending or running:
        for sid, (step, start) in list(running.items()):
            status = client.get_job_status(sid)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                del running[sid]
                done.add(step.name)
                wall = time.monotonic() - start
                records[step.name] = {
                    "phase": step.phase, "name": step.name, "job": step.job, "submission_id": sid,
                    "status": status.value, "wall_s": round(wall, 1), "output_dir": str(out / step.name),
                }  # fmt: skip
                mark = "ok " if status == JobStatus.SUCCEEDED else "!! "
                print(f"{mark}{step.phase:<13} {step.name:<26} {status.value:<9} {wall:6.1f}s", flush=True)
        vllm_busy = any(step.vllm for step, _ in running.values())
        for step in list(pending):
            if len(running) >= parallel:
                break
            if (step.vllm and vllm_busy) or not set(step.needs) <= done:
                continue
            pending.remove(step)
            running[submit(step, address, out, full, tag)] = (step, time.monotonic())
            vllm_busy = vllm_busy or step.vllm
        time.sleep(1)
    ordered = [records[step.name] for step in steps]
    for record in ordered:
        report = report_of(Path(record["output_dir"]))
        record["report"] = str(report) if report else None
    return ordered


def print_summary(records: list[dict], address: str) -> None:
    ok = sum(r["status"] == "SUCCEEDED" for r in records)
    print(f"\n== tour: {ok}/{len(records)} jobs succeeded on {address}")
    for r in records:
        where = r["report"] or f"(no outputs) ray job logs --address {address} {r['submission_id']}"
        print(f"   {r['phase']:<13} {r['name']:<26} {r['status']:<9} {r['wall_s']:6.1f}s  {where}")


def free_port() -> int:
    """A port nothing listens on now: another local Ray instance holds the default agent and GCS ports, and a
    head whose job agent cannot bind never accepts a job ("No available agent")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(address: str, cpus: int = 6) -> subprocess.Popen:
    """`ray start --head --block` in its own process group, so stopping it ends this head's processes only
    (`ray stop` would end every Ray instance on the machine). Returns once the head answers job requests.

    `cpus` is what the head advertises to Ray's scheduler, not a core count: three smoke jobs asking for 1-2
    CPUs each fit at once, so one waiting on another job (`needs`, one vLLM at a time) leaves no core idle."""
    # The jobs' `python` comes from the raylet's PATH: the venv first. On SIGTERM `ray start --block` first
    # drains the node for up to 30 s (for Serve traffic in a RayService upgrade): a tour head has none to drain.
    # Jobs run rayflow from the working directory Ray unpacks on the node (one copy per content hash, shared by
    # the jobs); with bytecode writing on, the first process to import a module compiles it for the rest. The
    # Makefile turns writing off for the checkout; left off here, every driver, actor and Train worker compiled
    # rayflow's modules again (~0.7 CPU-s a process for the training and engine modules).
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        # Train V2 starts a preemption-watcher actor (one more process) beside every worker group, for cloud
        # nodes that can be reclaimed; a local head has none.
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"),
    }
    head = subprocess.Popen(
        [ray_cli(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={urlparse(address).port or 8265}",
         f"--dashboard-agent-listen-port={free_port()}", f"--port={free_port()}",
         f"--ray-client-server-port={free_port()}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not cluster_answers(address):
        if head.poll() is not None or time.monotonic() > deadline:
            stop_head(head)
            raise RuntimeError(f"the local Ray head did not start (is {address} taken?)")
        time.sleep(1)
    return head


def stop_head(head: subprocess.Popen) -> None:
    # SIGTERM to `ray start --block` alone: it stops the processes it started, in order (its drain is off, see
    # start_head); the group kill catches stragglers.
    with contextlib.suppress(ProcessLookupError):
        os.kill(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--address", default=DEFAULT_ADDRESS, help="Ray dashboard address (default %(default)s)"
    )
    parser.add_argument(
        "--out", default=str(ROOT / "outputs" / "tour"), help="output root (default %(default)s)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these configs (names in configs/)"
    )
    parser.add_argument(
        "--full", action="store_true", help="run the configs as shipped, without smoke settings"
    )
    parser.add_argument(
        "--parallel", type=int, default=3, help="jobs in flight at once (default %(default)s)"
    )
    args = parser.parse_args(argv)
    steps = [s for s in STEPS if not args.only or s.name in args.only]
    unknown = set(args.only or ()) - {s.name for s in STEPS}
    if unknown:
        parser.error(f"unknown config(s): {', '.join(sorted(unknown))}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    head = None
    if not cluster_answers(args.address):
        print("== starting a local Ray head on 127.0.0.1", flush=True)
        head = start_head(args.address, cpus=max(os.cpu_count() or 1, 2 * args.parallel))
    try:
        print(f"== submitting {len(steps)} jobs to {args.address}; outputs under {out}", flush=True)
        records = run_tour(steps, args.address, out, full=args.full, parallel=args.parallel)
    finally:
        if head is not None:
            print("== stopping the local Ray head", flush=True)
            stop_head(head)
    (out / "tour.json").write_text(json.dumps(records, indent=2) + "\n")
    print_summary(records, args.address)
    return 0 if all(r["status"] == "SUCCEEDED" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
