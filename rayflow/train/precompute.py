"""Frozen-model log-probs (DPO references, WSPO's weak pair) computed once with Ray Data, cached on disk.

A frozen model's log-probs of the training responses never change, so they are computed in one Ray Data pass
through the engine layer's `score` (any backend: `hf`, `vllm`, `openai`) before training, and training then runs
with only the policy resident. Results are cached under `cache_dir/<key>/` where the key hashes the model (its
config and weight files), the exact token ids scored (which fixes dataset, tokenizer and chat template) and the
scoring mode; a rerun or another sweep trial with the same inputs reads the cache instead of scoring again.

Modes:
- `conditional`: log p(response | prompt), the usual reference.
- `unconditional`: log p(response) with the prompt removed — the study's "likelihood" reference. The response is
  scored after a lone BOS token (EOS when the tokenizer has no BOS), since a model needs one token of context.

A model with a different tokenizer from the policy (e.g. a stronger reference from another family) works: its
prompts and responses are re-tokenised with its own tokenizer and chat template, and only per-sequence sums are
used. Per-token values (WSPO) need the policy's tokenizer and are refused otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from rayflow.config import cache_root
from rayflow.data.engine_stage import StageConfig, engine_map, score_rows
from rayflow.llm import Engine, EngineConfig, PromptRejected, load_tokenizer, resolve_model_path
from rayflow.train.preference_data import Example, prompt_ids, response_ids

Mode = Literal["conditional", "unconditional"]
CACHE_FORMAT = "v1"


class PrecomputeConfig(StageConfig):
    """How the frozen-model scoring pass runs: the engine stage's pool, and where results are cached."""

    batch_size: int = Field(32, ge=1, description="rows per batch (one engine call per batch)")
    cache_dir: str | None = Field(
        None, description="None = $RAYFLOW_CACHE/logps (default ~/.cache/rayflow/logps)"
    )


@dataclass(frozen=True)
class FrozenLogps:
    """Log-probs (nats) of every example's responses, in example order: per-sequence sums, the number of tokens
    each sum covers (in the scoring model's tokenizer), and `*_tokens` only when per-token values were asked."""

    chosen: list[float]
    rejected: list[float] | None
    chosen_tokens: list[list[float]] | None
    rejected_tokens: list[list[float]] | None
    cache_path: str
    from_cache: bool
    chosen_lengths: list[int] | None = None
    rejected_lengths: list[int] | None = None


def precompute_logps(
    examples: Sequence[Example],
    engine: EngineConfig,
    *,
    policy_tokenizer,
    mode: Mode = "conditional",
    per_token: bool = False,
    cfg: PrecomputeConfig | None = None,
) -> FrozenLogps:
    """Score every example's chosen (and rejected) response under `engine`'s model, through Ray Data.

    `policy_tokenizer` is the trained model's tokenizer: when the scoring model's tokenizer is the same, the
    examples' own token ids are scored (so sums match the trainer's forward exactly); otherwise each text is
    re-tokenised for the scorer. Needs a running Ray cluster unless the result is already cached.
    """
    cfg = cfg or PrecomputeConfig()
    scorer_tok = load_tokenizer(engine)
    same_tok = _tokenizer_fingerprint(scorer_tok) == _tokenizer_fingerprint(policy_tokenizer)
    if per_token and not same_tok:
        raise ValueError(
            f"per-token log-probs need the policy's tokenizer, but {engine.model!r} tokenises "
            "differently (WSPO requires all four models to share one tokenizer)"
        )
    has_rejected = bool(examples) and examples[0].rejected_ids is not None
    rows = [_score_row(i, e, scorer_tok, same_tok, mode, has_rejected) for i, e in enumerate(examples)]
    key = _cache_key(engine, rows, mode)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_root() / "logps"
    target = root / key
    from_cache = (target / "logps.parquet").is_file()
    if not from_cache:
        table = _score_with_ray(rows, engine, cfg, has_rejected)
        _write_cache(
            target,
            table,
            {
                "model": engine.model,
                "backend": engine.backend,
                "mode": mode,
                "per_token": per_token,
                "rows": len(rows),
                "same_tokenizer_as_policy": same_tok,
                "chat_template_sha256": hashlib.sha256(str(scorer_tok.chat_template).encode()).hexdigest(),
            },
        )
    import pyarrow.parquet as pq

    table = pq.read_table(target / "logps.parquet").to_pydict()
    order = sorted(range(len(table["idx"])), key=table["idx"].__getitem__)
    chosen_tok = [table["chosen_tokens"][i] for i in order]
    rejected_tok = [table["rejected_tokens"][i] for i in order] if has_rejected else None
    return FrozenLogps(
        chosen=[sum(t) for t in chosen_tok],
        rejected=[sum(t) for t in rejected_tok] if rejected_tok is not None else None,
        chosen_tokens=chosen_tok if per_token else None,
        rejected_tokens=rejected_tok if per_token else None,
        cache_path=str(target),
        from_cache=from_cache,
        chosen_lengths=[len(t) for t in chosen_tok],
        rejected_lengths=[len(t) for t in rejected_tok] if rejected_tok is not None else None,
    )


def _score_row(idx: int, e: Example, tok, same_tok: bool, mode: Mode, has_rejected: bool) -> dict[str, Any]:
    if same_tok:
        p, c, r = e.prompt_ids, e.chosen_ids, e.rejected_ids
    else:
        p, c = prompt_ids(tok, e.prompt), response_ids(tok, e.chosen)
        r = response_ids(tok, e.rejected) if has_rejected else None
    if mode == "unconditional":
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        p = [start]
    return {
        "idx": idx,
        "prompt_ids": list(p),
        "chosen_ids": list(c),
        "rejected_ids": list(r) if has_rejected else [],
    }


class ScoreTask:
    """Engine task: token-id rows in, per-token log-probs of the chosen (and rejected) response out."""

    schema = pa.schema(
        [
            ("idx", pa.int64()),
            ("chosen_tokens", pa.list_(pa.float64())),
            ("rejected_tokens", pa.list_(pa.float64())),
            ("error", pa.string()),
        ]
    )

    def __init__(self, engine: EngineConfig, has_rejected: bool):
        self.engine = engine
        self.has_rejected = has_rejected

    def __call__(self, rows: list[dict[str, Any]], engine: Engine) -> None:
        sides = ("chosen", "rejected") if self.has_rejected else ("chosen",)
        pairs = [[(row["prompt_ids"], row[f"{side}_ids"]) for side in sides] for row in rows]
        for row, result in zip(rows, score_rows(engine, pairs)):
            if isinstance(result, PromptRejected):
                row.update(chosen_tokens=[], rejected_tokens=[], error=result.reason)
                continue
            row.update(chosen_tokens=result[0].logprobs, error=None)
            row["rejected_tokens"] = result[1].logprobs if self.has_rejected else []


def _score_with_ray(
    rows: list[dict[str, Any]], engine: EngineConfig, cfg: PrecomputeConfig, has_rejected: bool
) -> pa.Table:
    import ray

    ds = engine_map(ray.data.from_items(rows), [ScoreTask(engine, has_rejected)], cfg)
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    if len(table) != len(rows):
        raise RuntimeError(f"scoring returned {len(table)} rows for {len(rows)} inputs")
    failed = [(i, e) for i, e in zip(table["idx"].to_pylist(), table["error"].to_pylist()) if e is not None]
    if failed:
        # A reference is needed for every training example: name the ones the model cannot score.
        shown = "; ".join(f"example {i}: {e}" for i, e in sorted(failed)[:5])
        raise ValueError(f"{engine.model!r} refused {len(failed)} of {len(rows)} examples ({shown})")
    return table


def _write_cache(target: Path, table: pa.Table, meta: dict[str, Any]) -> None:
    """Write into a sibling temp dir and rename, so concurrent trials never read a half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        import pyarrow.parquet as pq

        pq.write_table(table.select(["idx", "chosen_tokens", "rejected_tokens"]), tmp / "logps.parquet")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another trial finished the same key first; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cache_key(engine: EngineConfig, rows: list[dict[str, Any]], mode: Mode) -> str:
    """Per-token values are always stored, so asking for them or not shares one cache entry."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": CACHE_FORMAT,
                "model": model_fingerprint(engine.model),
                "dtype": engine.dtype,
                "mode": mode,
            }
        ).encode()
    )
    for r in rows:
        h.update(json.dumps([r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]]).encode())
    return h.hexdigest()[:32]


def model_fingerprint(model: str) -> str:
    """Identify a model's weights without reading them all: config plus size, head and tail of each weight file."""
    path = Path(resolve_model_path(model))
    if not path.is_dir():
        return model  # a hub id: its name (and the hub's immutable revision) identifies it
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".pt"):
            size = f.stat().st_size
            with open(f, "rb") as fh:
                h.update(f"{f.name}:{size}".encode())
                h.update(fh.read(1 << 20))
                fh.seek(max(0, size - (1 << 20)))
                h.update(fh.read())
    return h.hexdigest()


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps([vocab, tokenizer.eos_token_id]).encode()).hexdigest()
