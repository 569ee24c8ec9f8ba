"""Job entrypoints as users run them: `--help` and its defaults, config errors, the job shell, shipped configs,
(`make demo` and every config's `ray job submit` run in tests/test_tour.py)."""

import functools
import importlib.util
import json
import os
import subprocess
import sys
import types
from typing import Union, get_args, get_origin

import pytest
from pydantic import Field, TypeAdapter

from rayflow.config import Config, dump_config, load_config
from rayflow.workflow import Result, job_main, require_path
from tests.conftest import REPO

JOBS = sorted(p.name for p in (REPO / "jobs").glob("*.py"))
HELP_WIDTH = 100
TABLE_START = "config keys (set with key=value, dotted for nested sections):\n"
# Bad command lines, each a job must refuse in one line on stderr with exit 2 before Ray starts.
BAD_ARGV = {
    "bad value": ["jobs/generate.py", "--config", "configs/generate.yaml", "sampling.max_tokens=lots"],
    "unknown key": ["jobs/generate.py", "engine.modle=x"],
    "bad choice": ["jobs/prox_refine.py", "--config", "configs/prox_refine.yaml", "generator=gpt"],
    "missing input": ["jobs/prox_refine.py", "--config", "configs/prox_refine.yaml", "input=/nonexistent/corpus"],
}

# Every job's `--help` and the bad command lines in ONE interpreter: the jobs' imports (torch, Ray) are paid
# once. Each run is the job file executed as `__main__`, exactly as `python jobs/<job>.py ...` runs it.
RUN_ALL = """
import json, runpy, sys, traceback
for argv in json.loads(sys.argv[1]):
    sys.argv = argv
    print(f"@@@ {sys.argv!r}", flush=True)
    print(f"@@@ {sys.argv!r}", file=sys.stderr, flush=True)
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code or 0  # SystemExit() and SystemExit(None) mean success
    except Exception:  # one broken job must not hide the others' results
        traceback.print_exc()
        code = "crashed"
    print(f"@@@ exit {code}", flush=True)
"""


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, ...], tuple[str, str, str]]:
    """argv -> (exit code, stdout, stderr) of every job's `--help` and of BAD_ARGV."""
    argvs = [(f"jobs/{job}", "--help") for job in JOBS] + [tuple(a) for a in BAD_ARGV.values()]
    env = {**os.environ, "COLUMNS": str(HELP_WIDTH)}  # argparse wraps usage to the terminal width
    proc = subprocess.run(
        [sys.executable, "-c", RUN_ALL, json.dumps(argvs)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = proc.stdout.split("@@@ ")[1:]
    errs = proc.stderr.split("@@@ ")[1:]
    result = {}
    for argv, (start, end), err in zip(argvs, zip(outs[::2], outs[1::2]), errs):
        assert start.startswith(repr(list(argv))), start[:200]
        code = end.split()[1]
        result[argv] = (code, start.split("\n", 1)[1], err.split("\n", 1)[1])
    return result


@functools.cache
def job_config(job: str) -> type[Config]:
    """The one Config class a job module imports (tests find a job's config by it)."""
    path = REPO / "jobs" / job
    spec = importlib.util.spec_from_file_location(f"rayflow_job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a job's work sits under `if __name__ == "__main__"`
    found = {
        v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Config) and v is not Config
    }
    assert len(found) == 1, f"{job} imports {len(found)} Config classes at module level: {found}"
    return found.pop()


def parse_table(help_text: str) -> dict[str, dict[str, str]]:
    """The --help config-key table: key -> {type, default (JSON text or "(required)"), description}."""
    assert TABLE_START in help_text, help_text[-2000:]
    lines = help_text.split(TABLE_START, 1)[1].splitlines()
    assert lines[0].split()[:3] == ["key", "type", "default"]
    rows: dict[str, dict[str, str]] = {}
    row: dict[str, str] = {}
    for line in lines[1:]:
        if not line.strip() or not rows and line.strip() == "description":  # the header's, stacked
            continue
        if not line.startswith(" "):
            key, type_name, *rest = line.split(maxsplit=2)
            row = rows[key] = {"type": type_name, "default": "", "description": ""}
            rest_text = rest[0] if rest else ""
            if rest_text.startswith("(required)"):
                row["default"], end = "(required)", len("(required)")
            elif rest_text:
                end = json.JSONDecoder().raw_decode(rest_text)[1]
                row["default"] = rest_text[:end]
            else:
                end = 0
            row["description"] = rest_text[end:].strip()
        elif line.startswith("    = ") and not row["description"] and not _complete(row["default"]):
            row["default"] += line[6:]  # a default too wide for its key's line, in pieces
        else:
            row["description"] = f"{row['description']} {line.strip()}".strip()
    return rows


def _complete(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return text == "(required)"
    return True


def section_class(annotation) -> type[Config] | None:
    """The Config class of a section field, also through `X | None`; None for other fields."""
    union = get_origin(annotation) in (Union, types.UnionType)
    for arg in get_args(annotation) if union else (annotation,):
        if isinstance(arg, type) and issubclass(arg, Config):
            return arg
    return None


def flatten(cls: type[Config], data: dict, prefix: str = "") -> dict[str, tuple[object, object]]:
    """Dotted key -> (value, annotation) of a dumped config, sections expanded as --help expands them."""
    out = {}
    for name, value in data.items():
        annotation = cls.model_fields[name].annotation
        section = section_class(annotation)
        if section is not None and isinstance(value, dict):
            out.update(flatten(section, value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = (value, annotation)
    return out


@pytest.mark.parametrize("job", JOBS)
def test_help_shows_the_defaults_the_job_runs_with(job, runs):
    code, out, err = runs[(f"jobs/{job}", "--help")]
    assert code == "0", err[-2000:]
    assert "usage:" in out and "--config FILE" in out
    assert max(len(line) for line in out.split(TABLE_START, 1)[1].splitlines()) <= HELP_WIDTH
    table = parse_table(out)
    cls = job_config(job)
    expected = flatten(cls, dump_config(load_config(cls)))
    for key, (value, annotation) in expected.items():
        assert key in table, f"{job}: --help has no row for {key}"
        # What the printed default means once given back as a value: Config objects inside containers
        # are printed with only their non-default keys.
        adapter = TypeAdapter(annotation)
        shown = adapter.dump_python(adapter.validate_json(table[key]["default"], strict=True), mode="json")
        assert shown == value, f"{job}: --help shows {key}={table[key]['default']}, the job runs {value!r}"
    # Beyond the running config's keys, only the keys of sections that are off by default have rows.
    off = [
        key for key, (value, annotation) in expected.items() if value is None and section_class(annotation)
    ]
    extra = [k for k in table.keys() - expected.keys() if not any(k.startswith(f"{o}.") for o in off)]
    assert not extra, f"{job}: --help rows for keys the config does not have: {extra}"


def test_generate_help_shows_its_declared_engine(runs):
    table = parse_table(runs[("jobs/generate.py", "--help")][1])
    assert (
        table["engine.backend"]["default"] == '"vllm"' and table["engine.max_model_len"]["default"] == "512"
    )
    assert table["sampling.max_tokens"]["default"] == "32"


@pytest.mark.parametrize("job", JOBS)
def test_every_config_key_is_described(job, runs):
    table = parse_table(runs[(f"jobs/{job}", "--help")][1])
    undescribed = [key for key, row in table.items() if not row["description"]]
    assert not undescribed, f"{job}: config keys without a description: {', '.join(undescribed)}"


def test_bad_command_lines_are_one_line_errors(runs):
    code, _, err = runs[tuple(BAD_ARGV["bad value"])]
    assert code == "2"
    assert len(err.splitlines()) == 1 and err.startswith("error: sampling.max_tokens: ")
    code, _, err = runs[tuple(BAD_ARGV["unknown key"])]
    assert code == "2"
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown config key 'engine.modle'")
    code, _, err = runs[tuple(BAD_ARGV["bad choice"])]
    assert code == "2"
    assert len(err.splitlines()) == 1 and err.startswith("error: generator: ") and "'gpt'" in err
    # A missing input is refused by the job's check, before Ray starts.
    code, _, err = runs[tuple(BAD_ARGV["missing input"])]
    assert code == "2"
    assert len(err.splitlines()) == 1 and err.startswith("error: input") and "/nonexistent/corpus" in err


# Which job reads each shipped config; a new file in configs/ must be added here.
CONFIG_JOBS = {
    "agent_eval": "agent_eval.py",
    "build_index": "build_index.py",
    "decontaminate": "decontaminate.py",
    "eval_conflicts": "eval_conflicts.py",
    "eval_prox_refiner": "eval_prox_refiner.py",
    "eval_rag": "eval_rag.py",
    "eval_safety": "eval_safety.py",
    "eval_safety_reference": "eval_safety.py",
    "generate": "generate.py",
    "make_conflicts": "make_conflicts.py",
    "prox_annotate": "prox_annotate.py",
    "prox_refine": "prox_refine.py",
    "prox_refine_lm": "prox_refine.py",
    "sweep_beta": "sweep_beta.py",
    "sweep_beta_full": "sweep_beta.py",
    "train_agent_policy": "train_agent_policy.py",
    "train_dpo": "train_preference.py",
    "train_ipo": "train_preference.py",
    "train_judge": "train_judge.py",
    "train_likelihood": "train_preference.py",
    "train_prox_refiner": "train_prox_refiner.py",
    "train_posterior": "train_preference.py",
    "train_robust": "train_preference.py",
    "train_sft": "train_sft.py",
    "train_stronger_reference": "train_preference.py",
    "train_vlm": "train_vlm.py",
    "train_vlm_zero": "train_vlm.py",
    "train_wspo": "train_preference.py",
}


def test_every_shipped_config_loads_with_its_job():
    assert sorted(p.stem for p in (REPO / "configs").glob("*.yaml")) == sorted(CONFIG_JOBS)
    for name, job in CONFIG_JOBS.items():
        load_config(job_config(job), REPO / "configs" / f"{name}.yaml")


class TinyConfig(Config):
    input: str = Field("in.jsonl", description="input file")


def test_job_shell_usage_without_arguments_and_missing_inputs(capsys, tmp_path, rayflow_logging):
    ran: list[TinyConfig] = []

    def run(cfg: TinyConfig) -> Result:
        ran.append(cfg)
        return Result(str(tmp_path), {}, "done")

    def check(cfg: TinyConfig) -> None:
        require_path(cfg.input, "input")

    # Defaults that need inputs: no arguments at all is a usage message, not a run.
    with pytest.raises(SystemExit) as exc:
        job_main(TinyConfig, run, [], description="A tiny job.", check=check, offline_defaults=False)
    assert exc.value.code == 2 and not ran
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and "error: this job's defaults need inputs" in err
    # A missing input is one line naming the key, and the workflow never runs (nor does Ray start: the
    # check comes first). With offline defaults, no arguments goes straight to the check.
    missing = tmp_path / "missing.jsonl"
    for argv, offline in (([f"input={missing}"], False), ([], True)):
        with pytest.raises(SystemExit) as exc:
            job_main(TinyConfig, run, argv, check=check, offline_defaults=offline)
        assert exc.value.code == 2 and not ran
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"error: input: {str(missing)!r} does not exist",
        "error: input: 'in.jsonl' does not exist",
    ]
