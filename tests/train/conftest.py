"""Fixtures for training tests: a synthetic preference the tiny model can learn, written as JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

NAMES = ["Umar", "Sam", "Julia", "Mira", "Tom", "Ana", "Leo", "Ivy", "Noor", "Eli", "Kai", "Zoe"]
PLACES = [
    "the park",
    "the bookshop",
    "the train platform",
    "the kitchen",
    "the market",
    "the river",
    "the hill",
]
THINGS = [
    "a loaf of bread",
    "a lost glove",
    "a quick sketch",
    "fresh basil",
    "a spoon of honey",
    "a warm scarf",
]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Preference rows where the chosen answer starts "Sure." and the rejected one "No.": one token decides it,
    so a tiny random model learns it in a few dozen steps and the preference carries over to unseen prompts.
    Every third row uses the chat layout (UltraFeedback-style message lists)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, place, thing = rng.choice(NAMES), rng.choice(PLACES), rng.choice(THINGS)
        prompt = f"Tell me what {name} did at {place}."
        fact = f"{name} went to {place} and found {thing}."
        chosen, rejected = f"Sure. {fact}", f"No. {fact}"
        if i % 3 == 2:
            user = {"role": "user", "content": prompt}
            rows.append(
                {
                    "id": f"r{i}",
                    "prompt": prompt,
                    "chosen": [user, {"role": "assistant", "content": chosen}],
                    "rejected": [user, {"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"id": f"r{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


BAD_ROWS = [
    '{"id": "bad-json", "prompt": ',
    json.dumps({"id": "no-rejected", "prompt": "Hi", "chosen": "Hello."}),
    json.dumps({"id": "empty-chosen", "prompt": "Hi", "chosen": "  ", "rejected": "No."}),
    json.dumps({"id": "long-prompt", "prompt": "word " * 400, "chosen": "Sure.", "rejected": "No."}),
]


def write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> Path:
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines)
    )
    return path


@pytest.fixture(scope="session")
def pref_data(tmp_path_factory) -> dict[str, Path]:
    """train.jsonl (96 good rows + 4 bad), eval.jsonl (32 unseen rows), sft.jsonl ({prompt, response})."""
    d = tmp_path_factory.mktemp("prefdata")
    rows = synthetic_rows(128, seed=1)
    sft = [
        {
            "prompt": r["prompt"],
            "response": r["chosen"] if isinstance(r["chosen"], str) else r["chosen"][-1]["content"],
        }
        for r in synthetic_rows(48, seed=2)
    ]
    return {
        "train": write_jsonl(d / "train.jsonl", rows[:96], BAD_ROWS),
        "eval": write_jsonl(d / "eval.jsonl", rows[96:]),
        "sft": write_jsonl(d / "sft.jsonl", sft),
    }


def wait_for_registered_checkpoint(run_dir: str, step: int, limit_s: float = 60) -> None:
    """Block until Ray Train has registered the checkpoint reported at `step` of the run in `run_dir`
    (`<storage_path>/<name>`), so a worker that dies right after resumes from it. Ray registers a reported
    checkpoint at its controller's next poll of the workers; polling its snapshot beats sleeping a guessed time.
    Called on a Train worker: the test modules ship this module by value (cloudpickle)."""
    import time

    snapshot = Path(run_dir) / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
            if latest and latest["metrics"]["step"] >= step:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            pass  # not written yet, or caught mid-write
        time.sleep(0.1)
    raise TimeoutError(f"no checkpoint of step {step} registered in {snapshot} within {limit_s} s")
