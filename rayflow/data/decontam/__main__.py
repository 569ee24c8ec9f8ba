"""The evidence database from the command line.

    python -m rayflow.data.decontam import --db sqlite:////abs/ev.db conda.csv
    python -m rayflow.data.decontam export --db sqlite:////abs/ev.db out.csv [--dataset gsm8k] [--source GPT-4]
    python -m rayflow.data.decontam query  --db sqlite:////abs/ev.db [--dataset gsm8k] [--source GPT-4] [--json]

`--db` is any SQLAlchemy URL (default: $RAYFLOW_EVIDENCE_DB). A bad file is one `error: ...` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rayflow.data.decontam.evidence import CONDA_HEADER, CondaFormatError, EvidenceDB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayflow.data.decontam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("import", "add a CONDA CSV's rows"), ("export", "write rows as a CONDA CSV"),
                       ("query", "print rows for a dataset and/or source")):  # fmt: skip
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--db", default=os.environ.get("RAYFLOW_EVIDENCE_DB"), help="SQLAlchemy URL")
        if name in ("import", "export"):
            sub.add_argument("path", help="the CONDA CSV file")
        if name in ("export", "query"):
            sub.add_argument("--dataset", help="only this evaluation dataset")
            sub.add_argument("--source", help="only this contaminated source (model or corpus)")
        if name == "query":
            sub.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if not args.db:
        parser.error("--db is required (or set RAYFLOW_EVIDENCE_DB)")
    db = EvidenceDB(args.db)
    try:
        if args.command == "import":
            added = db.import_conda_csv(args.path)
            print(f"imported {added} new rows from {args.path}")
        elif args.command == "export":
            n = db.export_conda_csv(args.path, args.dataset, args.source)
            print(f"exported {n} rows to {args.path}")
        else:
            rows = db.query(args.dataset, args.source)
            for row in rows:
                print(json.dumps(row, ensure_ascii=False) if args.json else ";".join(row[h] for h in CONDA_HEADER))
            if not args.json:
                print(f"{len(rows)} rows", file=sys.stderr)
    except (CondaFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
