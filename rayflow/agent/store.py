"""Where sessions live: one row per session and one per turn (and the Benchmark+ sets the service built), written as each turn finishes (SQLAlchemy; SQLite
by default, any URL), so a session that stopped (a crash, a replica replaced) resumes from its last turn.

    store = SessionStore("sqlite:////abs/sessions.db")
    sid = store.create({"target": {...}, "items": [...], "turns": 6, "policy": "learned", "seed": 0})
    store.add_turn(sid, {...}); store.turns(sid); store.set_status(sid, "done", scores={...})
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, insert, select, update

metadata = MetaData()
sessions = Table(
    "agent_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("spec", Text, nullable=False),  # JSON: target, items, turns, policy, seed
    Column("status", String(16), nullable=False),  # created, running, done, error
    Column("error", Text),
    Column("scores", Text),  # JSON
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)
benchmarks = Table(
    "agent_benchmarks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("items", Text, nullable=False),  # JSON list of Benchmark+ items
    Column("info", Text, nullable=False),  # JSON: source, dropped items
    Column("created_at", String(32), nullable=False),
)
turns = Table(
    "agent_turns",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("item_index", Integer, primary_key=True),
    Column("turn", Integer, primary_key=True),
    Column("record", Text, nullable=False),  # JSON: the turn (type, question, answer, grade, state)
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SessionStore:
    """Sessions and their turns at an SQLAlchemy URL; tables are created on open."""

    def __init__(self, url: str):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = create_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def create(self, spec: dict[str, Any], session_id: str | None = None) -> str:
        """A new session of `spec`; returns its id."""
        sid = session_id or uuid.uuid4().hex
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(insert(sessions).values(id=sid, spec=json.dumps(spec, ensure_ascii=False), status="created",
                                                 created_at=now, updated_at=now))  # fmt: skip
        return sid

    def ids(self, status: str) -> list[str]:
        """The sessions with this status."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(sessions.c.id).where(sessions.c.status == status)).scalars())

    def add_benchmark(self, items: list[dict], info: dict) -> str:
        """Store a Benchmark+ set; returns its id."""
        bid = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(insert(benchmarks).values(id=bid, items=json.dumps(items, ensure_ascii=False),
                                                   info=json.dumps(info, ensure_ascii=False), created_at=_now()))  # fmt: skip
        return bid

    def benchmark(self, benchmark_id: str) -> list[dict] | None:
        """A stored benchmark's items, or None."""
        with self.engine.connect() as conn:
            # `benchmarks.c.items` would be the column collection's own method.
            query = select(benchmarks.c["items"]).where(benchmarks.c.id == benchmark_id)
            row = conn.execute(query).scalar()
        return None if row is None else json.loads(row)

    def get(self, session_id: str) -> dict[str, Any] | None:
        """{id, spec, status, error, scores, created_at, updated_at}, or None when there is no such session."""
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id == session_id)).mappings().first()
        if row is None:
            return None
        return {
            **row,
            "spec": json.loads(row["spec"]),
            "scores": json.loads(row["scores"]) if row["scores"] else None,
        }

    def add_turn(self, session_id: str, record: dict[str, Any]) -> None:
        """Persist one finished turn (`record` holds item_index and turn)."""
        with self.engine.begin() as conn:
            conn.execute(insert(turns).values(session_id=session_id, item_index=record["item_index"],
                                              turn=record["turn"], record=json.dumps(record, ensure_ascii=False)))  # fmt: skip
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(updated_at=_now()))

    def turns(self, session_id: str) -> list[dict[str, Any]]:
        """The session's turns, by item then turn."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(turns.c.record)
                .where(turns.c.session_id == session_id)
                .order_by(turns.c.item_index, turns.c.turn)
            ).scalars()
            return [json.loads(r) for r in rows]

    def set_status(
        self, session_id: str, status: str, error: str | None = None, scores: dict | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": _now()}
        if scores is not None:
            values["scores"] = json.dumps(scores)
        with self.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(**values))
