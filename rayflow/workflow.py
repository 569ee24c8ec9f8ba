"""One shape for every workflow: a typed `Config`, `run(cfg) -> Result` in the library, a thin job shell.

    # rayflow/<area>/<workflow>.py
    def check(cfg: MyConfig) -> None:              # inputs and models, before Ray starts or a model loads
        require_path(cfg.input, "input")
        require_model(cfg.engine.model, "engine.model")

    def run(cfg: MyConfig) -> Result:              # on the current Ray cluster; writes its own outputs
        with Workflow("my_job", cfg, cfg.output_dir) as wf:
            with wf.phase("work"):
                counts = ...
            return wf.finish(counts, f"did {counts['rows']} rows")

    # jobs/my_job.py
    if __name__ == "__main__":
        job_main(MyConfig, run, check=check, description=__doc__)

Every workflow's output directory then holds `run.json` (config, versions, git commit, phases, status),
`summary.json` (the workflow's figures; the same object is under `results.summary` in run.json) and its
artefacts. Library code never calls `ray.init`; `job_main` does, after the checks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rayflow.config import Config, build_parser, parse_cli
from rayflow.runinfo import RunRecord, write_json

__all__ = [
    "SUMMARY_FILE",
    "InputError",
    "Result",
    "Workflow",
    "configure_logging",
    "job_main",
    "require_model",
    "require_path",
]

SUMMARY_FILE = "summary.json"
C = TypeVar("C", bound=Config)


class InputError(ValueError):
    """An input path or model named in the config does not exist; the message names the config key."""


@dataclass(frozen=True)
class Result:
    """What `run(cfg)` returns: where the outputs are, the summary written to summary.json, one line for people."""

    output_dir: str
    summary: dict[str, Any]
    message: str


class Workflow(RunRecord):
    """A `RunRecord` (run.json) that also writes the workflow's `summary.json` and builds its `Result`."""

    def __init__(self, job: str, config: Config, output_dir: str | os.PathLike) -> None:
        super().__init__(output_dir, config, job=job)

    def finish(self, summary: dict[str, Any], message: str) -> Result:
        """Write `summary.json`, record the summary in run.json, and return the workflow's `Result`."""
        write_json(self.output_dir / SUMMARY_FILE, summary)
        self.set("summary", summary)
        return Result(str(self.output_dir.resolve()), summary, message)


def require_path(value: str | os.PathLike | None, key: str) -> None:
    """Raise `InputError` naming `key` when the local path `value` does not exist (URIs are not checked here)."""
    if value is None:
        return
    text = str(value)
    if "://" in text:
        return
    if not Path(text).expanduser().exists():
        raise InputError(f"{key}: {text!r} does not exist")


def require_model(name: str | None, key: str) -> None:
    """Raise `InputError` naming `key` when a path-like model name is not a local directory.

    `tiny:<size>` names are built offline on first use, and hub ids (`org/name`) are left to the loader.
    """
    if name is None or name.startswith("tiny:"):
        return
    path_like = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if path_like and not Path(name).expanduser().is_dir():
        raise InputError(f"{key}: model directory {name!r} does not exist")


def configure_logging(level: int = logging.INFO) -> None:
    """The one logging set-up of every job: timestamped lines from rayflow's loggers on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("rayflow")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def job_main(
    cls: type[C],
    run: Callable[[C], Result],
    argv: Sequence[str] | None = None,
    *,
    description: str = "",
    check: Callable[[C], None] | None = None,
    offline_defaults: bool = True,
) -> Result:
    """The job shell: parse the config, check inputs, start Ray, `run`, print the result's line.

    With no arguments at all, a job whose defaults do not run offline (`offline_defaults=False`) prints its
    usage and exits 2. A config error or a missing input is one `error: ...` line on stderr and exit 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv and not offline_defaults:
        parser = build_parser(cls, description)
        print(parser.format_usage().rstrip(), file=sys.stderr)
        print("error: this job's defaults need inputs: give --config FILE and/or key=value", file=sys.stderr)
        raise SystemExit(2)
    cfg = parse_cli(cls, argv, description=description)
    configure_logging()
    try:
        if check is not None:
            check(cfg)
        import ray

        if not ray.is_initialized():
            ray.init()
        result = run(cfg)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(result.message)
    return result
