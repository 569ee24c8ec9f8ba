"""Shared test fixtures: one tiny model family, one local Ray session, free ports.

vLLM engines are started by the few modules that test vLLM itself, each with a module-scoped fixture, so
two engines never run at once on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Offline and quiet, before anything imports Ray or transformers; Ray workers inherit this environment.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# Train V2's controller polls its workers every 2 s, so each fit ends up to 2 s after its workers do; tests run
# many short fits.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# ... and starts a preemption-watcher actor (one more process) with every worker group, which watches for cloud
# nodes being reclaimed: none are here, and on 2 cores the extra process start slows every Train start.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # `tiny:<size>` names in configs resolve into this cache; keep tests out of the user's ~/.cache.
    if "RAYFLOW_CACHE" not in os.environ:
        os.environ["RAYFLOW_CACHE"] = str(REPO / ".cache" / "test-rayflow")


def pytest_collection_modifyitems(config, items):
    # `cluster` tests start and stop a real Ray head with `ray stop`, which ends every Ray process on the
    # machine, the shared session's too: they run last.
    items.sort(key=lambda item: "cluster" in item.keywords)
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A weak (`tiny`) and a strong (`small`) random Llama sharing one tokenizer."""
    from rayflow.llm import build_family

    return build_family(tmp_path_factory.mktemp("models"), sizes=("tiny", "small"))


@pytest.fixture(scope="session")
def tiny_model(tiny_models) -> Path:
    return tiny_models["tiny"]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole run (`address="local"` never attaches to another cluster)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rayflow_logging():
    """`job_main` configures the `rayflow` logger; put it back for the tests that follow."""
    import logging

    logger = logging.getLogger("rayflow")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@contextlib.contextmanager
def in_process_vllm():
    """vLLM engines built inside this block run in the test process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the
    same engine and backend code without the engine-core and worker processes, so one starts in ~6-12 s instead
    of ~30 s on CPU. Engines built after the block (the Serve tests') are multi-process again."""
    from vllm import envs as vllm_envs

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        yield
    # An in-process engine freezes vLLM's environment settings, this switch included: read them afresh later.
    vllm_envs.disable_envs_cache()


def kill_after_first_part(proc: subprocess.Popen, data_dir: Path, limit_s: float = 120) -> None:
    """Wait until the job `proc` (started with `start_new_session=True`) commits its first `part-*.parquet`
    under `data_dir`, then SIGKILL its whole process group: the driver and the local Ray it started."""
    deadline = time.time() + limit_s
    while time.time() < deadline and not list(data_dir.glob("part-*.parquet")):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the job ended before a part"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
