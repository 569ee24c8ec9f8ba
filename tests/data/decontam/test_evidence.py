"""The evidence database: CONDA CSV round trip, duplicates, bad files, queries, the CLI and the HTTP route."""

import csv

import pytest
from fastapi.testclient import TestClient

from rayflow.data.decontam import CONDA_HEADER, CondaFormatError, EvidenceDB
from rayflow.data.decontam.__main__ import main
from rayflow.data.decontam.http import add_contamination_route
from rayflow.serving.guards import HTTPConfig, bearer_auth, guarded_app

ROWS = [
    ["gsm8k", "", "GPT-4", "model", "79.00", "", "", "model-based", "https://arxiv.org/abs/2311.06233", "8"],
    ["mmlu", "abstract_algebra", "The Pile", "corpus", "0", "12.5", "100.0", "data-based", "", ""],
    ["odd;name", 'say "hi"', "C4", "corpus", "", "", "3", "data-based", "line\nbreak", "12"],
]


def write_csv(path, rows, header=CONDA_HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def db(tmp_path):
    database = EvidenceDB(f"sqlite:///{tmp_path / 'ev.db'}")
    yield database
    database.close()


def test_export_reproduces_the_import_and_duplicates_add_nothing(db, tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, ROWS)
    assert db.import_conda_csv(src) == 3
    assert db.import_conda_csv(src) == 0
    write_csv(tmp_path / "more.csv", [ROWS[0], [*ROWS[0][:4], "79.0", *ROWS[0][5:]]])
    assert db.import_conda_csv(tmp_path / "more.csv") == 1  # 79.0 is not 79.00: a different row
    assert db.export_conda_csv(out) == 4
    lines = out.read_bytes().split(b"\r\n")
    assert lines[0] == ";".join(CONDA_HEADER).encode()
    with open(out, newline="") as f:
        exported = list(csv.reader(f, delimiter=";"))
    assert exported[1:4] == ROWS and exported[4][4] == "79.0"
    # Byte for byte: the file as Python's csv module writes it.
    db2 = EvidenceDB(f"sqlite:///{tmp_path / 'ev2.db'}")
    db2.import_conda_csv(src)
    db2.export_conda_csv(tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == src.read_bytes()
    db2.close()


def test_bad_files_name_the_line_and_add_nothing(db, tmp_path):
    write_csv(tmp_path / "bad_header.csv", ROWS, header=("Dataset", *CONDA_HEADER[1:]))
    with pytest.raises(CondaFormatError, match="line 1: expected the CONDA header"):
        db.import_conda_csv(tmp_path / "bad_header.csv")
    write_csv(tmp_path / "short.csv", [ROWS[0], ROWS[1][:9]])
    with pytest.raises(CondaFormatError, match="line 3: 9 fields, expected 10"):
        db.import_conda_csv(tmp_path / "short.csv")
    assert db.query() == []


def test_query_filters_and_the_cli(db, tmp_path, capsys):
    write_csv(tmp_path / "in.csv", ROWS)
    url = db.url
    assert main(["import", "--db", url, str(tmp_path / "in.csv")]) == 0
    assert "imported 3 new rows" in capsys.readouterr().out
    assert [r["Evaluation Dataset"] for r in db.query(source="C4")] == ["odd;name"]
    assert db.query(dataset="gsm8k", source="C4") == []
    row = db.query(dataset="gsm8k")[0]
    assert row["Train Split"] == "79.00" and row["Development Split"] == "" and row["method"] is None
    assert main(["query", "--db", url, "--dataset", "mmlu"]) == 0
    assert capsys.readouterr().out.strip() == ";".join(ROWS[1])
    assert main(["export", "--db", url, str(tmp_path / "out.csv"), "--source", "GPT-4"]) == 0
    assert (tmp_path / "out.csv").read_text().count("\n") == 2
    assert main(["import", "--db", url, str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_contamination_route(db, tmp_path):
    write_csv(tmp_path / "in.csv", ROWS)
    db.import_conda_csv(tmp_path / "in.csv")
    http = HTTPConfig(api_key="secret")
    app = guarded_app("test", http)
    add_contamination_route(app, db.url, bearer_auth(http))
    client = TestClient(app)
    headers = {"Authorization": "Bearer secret"}
    body = client.get("/v1/contamination", params={"dataset": "gsm8k", "source": "GPT-4"}, headers=headers).json()
    assert body["count"] == 1 and body["evidence"][0]["Train Split"] == "79.00"
    assert client.get("/v1/contamination", headers=headers).json()["count"] == 3
    assert client.get("/v1/contamination").status_code == 401
    off = guarded_app("test", HTTPConfig())
    add_contamination_route(off, None, bearer_auth(HTTPConfig()))
    reply = TestClient(off).get("/v1/contamination", params={"dataset": "gsm8k"})
    assert reply.status_code == 404 and "evidence_db" in reply.json()["error"]["message"]


def test_the_judge_app_serves_the_route_from_its_evidence_db_arg(db):
    """The judge app's own ASGI app (built without Serve or a model: the route needs neither)."""
    from serve.judge import JudgeAppArgs, SafetyJudgeServer

    db.add_evidence([{"dataset": "gsm8k", "source": "GPT-4", "source_type": "model", "train": "79.00"}])
    server = SafetyJudgeServer.func_or_class.__new__(SafetyJudgeServer.func_or_class)
    server.llm, server.model_name = None, "judge"
    for url, status in ((db.url, 200), (None, 404)):
        server.args = JudgeAppArgs(evidence_db=url)
        reply = TestClient(server.__serve_build_asgi_app__()).get("/v1/contamination", params={"dataset": "gsm8k"})
        assert reply.status_code == status
    assert reply.json()["error"]["type"] == "not_found_error"
