"""`GET /v1/contamination?dataset=&source=`: the evidence database over HTTP, for any rayflow FastAPI app.

    add_contamination_route(app, "sqlite:////abs/ev.db", auth)    # auth: the app's bearer-token dependency

Answers `{"dataset", "source", "count", "evidence": [rows as in EvidenceDB.query]}`; both query parameters are
optional filters. With no database configured the route answers 404 with a message saying how to configure one.
"""

from __future__ import annotations

from fastapi import FastAPI

from rayflow.data.decontam.evidence import EvidenceDB
from rayflow.serving.guards import bad_request


def add_contamination_route(app: FastAPI, db_url: str | None, auth) -> None:
    """Mount the route on `app`; `db_url` None gives every request a 404 naming the missing setting."""
    db = EvidenceDB(db_url) if db_url else None

    @app.get("/v1/contamination", dependencies=[auth])
    def contamination(dataset: str | None = None, source: str | None = None):
        if db is None:
            raise bad_request(
                "no contamination evidence database is configured: set evidence_db (an SQLAlchemy URL) "
                "in the app's args", "evidence_db", status=404
            )
        rows = db.query(dataset or None, source or None)
        return {"dataset": dataset, "source": source, "count": len(rows), "evidence": rows}
