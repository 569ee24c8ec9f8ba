"""The contamination evidence database: CONDA's rows, the runs that found them, and per-example matches.

    db = EvidenceDB("sqlite:////abs/path/evidence.db")     # any SQLAlchemy URL (postgresql+psycopg://...)
    db.import_conda_csv("conda.csv")                         # -> rows added (duplicates are skipped)
    db.export_conda_csv("out.csv")                           # every row, CONDA's format
    db.query(dataset="gsm8k", source="GPT-4")                # -> list of row dicts

CONDA's CSV (the CONDA 2024 shared task's contamination database) is `;`-delimited with the header
`CONDA_HEADER`. Values are kept as the strings they were imported as (empty stays empty, `79.00` stays `79.00`),
so an export reproduces an import; a row whose ten fields all equal an existing row's is a duplicate and is not
added again. Reading and writing use Python's `csv` module with `;` as delimiter (its quoting).

Tables: `evidence` (the ten CONDA fields, plus method, params, run and time for rows rayflow's runs filed),
`runs` (config, package versions, corpus, start and end), `example_matches` (one row per evaluation example per
run: each rule's score and verdict, the longest match, the matching documents, Min-K% when computed).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
)

CONDA_HEADER = (
    "Evaluation Dataset",
    "Subset",
    "Contaminated Source",
    "Model or corpus",
    "Train Split",
    "Development Split",
    "Test Split",
    "Approach",
    "Reference",
    "PR",
)
# Column names of the ten CONDA fields, in header order.
FIELDS = ("dataset", "subset", "source", "source_type", "train", "dev", "test", "approach", "reference", "pr")

metadata = MetaData()
evidence = Table(
    "evidence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("row_key", String(64), nullable=False, unique=True),  # sha256 of the ten fields: the duplicate test
    *(Column(name, Text, nullable=False, default="") for name in FIELDS),
    Column("method", String(64)),  # gpt3, palm, coverage, min-k (rows rayflow filed); None when imported
    Column("params", Text),  # JSON: the rule's n and thresholds, or Min-K%'s k and threshold
    Column("run_id", String(64)),
    Column("created_at", String(32), nullable=False),
)
runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("job", String(64), nullable=False),
    Column("config", Text, nullable=False),  # JSON
    Column("config_hash", String(64), nullable=False),
    Column("versions", Text, nullable=False),  # JSON
    Column("corpus", Text, nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32)),
)
example_matches = Table(
    "example_matches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("dataset", Text, nullable=False),
    Column("subset", Text, nullable=False),
    Column("split", String(32), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("example_id", Text),
    Column("n_tokens", Integer, nullable=False),
    Column("gpt3_score", Float),
    Column("gpt3_dirty", Boolean),
    Column("palm_score", Float),
    Column("palm_dirty", Boolean),
    Column("coverage_score", Float),
    Column("coverage_bucket", String(16)),
    Column("coverage_dirty", Boolean),
    Column("longest_match", Integer, nullable=False),
    Column("doc_ids", Text, nullable=False),  # JSON list
    Column("min_k_nll", Float),
    Column("min_k_suspected", Boolean),
)


class CondaFormatError(ValueError):
    """A CONDA CSV file does not have the header or the field count; the message names the file and line."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _row_key(values: Iterable[str]) -> str:
    return hashlib.sha256(json.dumps(list(values)).encode()).hexdigest()


class EvidenceDB:
    """The evidence database at an SQLAlchemy URL (e.g. `sqlite:////abs/path/ev.db`); tables are created."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add_evidence(self, rows: Iterable[dict[str, Any]]) -> int:
        """Add rows (the ten `FIELDS` as strings, "" for unknown, plus optional method, params, run_id);
        returns how many were new (a row whose ten fields equal an existing row's is skipped)."""
        added = 0
        with self.engine.begin() as conn:
            known = set(conn.execute(select(evidence.c.row_key)).scalars())
            for row in rows:
                values = {name: str(row.get(name) or "") for name in FIELDS}
                key = _row_key(values[name] for name in FIELDS)
                if key in known:
                    continue
                known.add(key)
                params = row.get("params")
                conn.execute(
                    insert(evidence).values(
                        row_key=key,
                        **values,
                        method=row.get("method"),
                        params=None if params is None else json.dumps(params, sort_keys=True),
                        run_id=row.get("run_id"),
                        created_at=_now(),
                    )
                )
                added += 1
        return added

    def import_conda_csv(self, path: str | Path) -> int:
        """Add the rows of a CONDA CSV file; returns how many were new. Raises `CondaFormatError` naming the line
        of a wrong header or a row without exactly ten fields (nothing is added then)."""
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=";")
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != CONDA_HEADER:
                raise CondaFormatError(f"{path}: line 1: expected the CONDA header {';'.join(CONDA_HEADER)!r}")
            rows = []
            for record in reader:
                if not record:  # a blank line
                    continue
                if len(record) != len(FIELDS):
                    raise CondaFormatError(
                        f"{path}: line {reader.line_num}: {len(record)} fields, expected {len(FIELDS)}"
                    )
                rows.append(dict(zip(FIELDS, record)))
        return self.add_evidence(rows)

    def query(self, dataset: str | None = None, source: str | None = None) -> list[dict[str, Any]]:
        """Evidence rows (in the order they were added), optionally for one evaluation dataset and/or source;
        each row has the ten fields under their CONDA header names plus method, params, run_id, created_at."""
        stmt = select(evidence).order_by(evidence.c.id)
        if dataset is not None:
            stmt = stmt.where(evidence.c.dataset == dataset)
        if source is not None:
            stmt = stmt.where(evidence.c.source == source)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            {
                **{header: row[name] for header, name in zip(CONDA_HEADER, FIELDS)},
                "method": row["method"],
                "params": None if row["params"] is None else json.loads(row["params"]),
                "run_id": row["run_id"],
                "created_at": row["created_at"],
            }
            for row in rows
        ]

    def export_conda_csv(self, path: str | Path, dataset: str | None = None, source: str | None = None) -> int:
        """Write the evidence rows (optionally filtered) as a CONDA CSV; returns the number of rows written."""
        rows = self.query(dataset, source)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=";")
            writer.writerow(CONDA_HEADER)
            writer.writerows([row[h] for h in CONDA_HEADER] for row in rows)
        return len(rows)

    def start_run(self, run_id: str, job: str, config: dict, versions: dict, corpus: str) -> None:
        """Record a run (its config as JSON and that JSON's hash, package versions, the corpus)."""
        text = json.dumps(config, sort_keys=True, default=str)
        with self.engine.begin() as conn:
            conn.execute(
                insert(runs).values(
                    run_id=run_id,
                    job=job,
                    config=text,
                    config_hash=hashlib.sha256(text.encode()).hexdigest()[:16],
                    versions=json.dumps(versions, sort_keys=True),
                    corpus=corpus,
                    started_at=_now(),
                )
            )

    def finish_run(self, run_id: str, matches: list[dict[str, Any]], findings: list[dict[str, Any]]) -> int:
        """File a run's per-example matches and its evidence rows, and mark it finished; returns new evidence."""
        with self.engine.begin() as conn:
            if matches:
                conn.execute(insert(example_matches), [{**m, "run_id": run_id} for m in matches])
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(finished_at=_now()))
        return self.add_evidence({**f, "run_id": run_id} for f in findings)

    def matches(self, run_id: str) -> list[dict[str, Any]]:
        """The per-example matches a run filed."""
        stmt = select(example_matches).where(example_matches.c.run_id == run_id).order_by(example_matches.c.id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings().all()]

    def runs(self) -> list[dict[str, Any]]:
        """Every recorded run, oldest first."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(runs).order_by(runs.c.started_at)).mappings().all()]
