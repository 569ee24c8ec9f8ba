"""The scan's corpus reader: whatever a file holds, it yields exactly the rows ProX's reader yields (same keys,
ids, texts and error kinds), reading clean chunks with Arrow and handing the rest of a file to ProX (no Ray);
and chunks it tokenises itself (`TokenChunk`) hold the same rows, texts' byte sizes and tokens as the index
makes of ProX's texts."""

import codecs
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rayflow.data.decontam import reading
from rayflow.data.decontam.index import EvalIndex
from rayflow.data.decontam.rules import NormalizeConfig
from rayflow.data.prox.reader import ReadOptions, filesystem, list_inputs, read_rows

OPTIONS = ReadOptions(max_line_bytes=3000, max_text_chars=100)
GOOD = [json.dumps({"id": f"d{i}", "text": f"document {i} text ÿ 東京", "meta": {"k": [i]}}) for i in range(30)]
INDEX = EvalIndex([["a"]], [1], NormalizeConfig())


def _tokens(texts):
    tokens, owner = INDEX.tokens(texts)
    per_text = [[] for _ in texts]
    for t, d in zip(tokens.to_pylist(), owner.tolist()):
        per_text[d].append(t)
    return per_text


def _rows(item, fields):
    """A yielded chunk's rows as dicts of `fields` (+ the text's UTF-8 size and tokens for good rows)."""
    if isinstance(item, reading.TokenChunk):
        buf, starts, ends, owner, *_ = item.spans
        tokens = [[] for _ in item.rows]
        for s, e, d in zip(starts.tolist(), ends.tolist(), owner.tolist()):
            tokens[d].append(bytes(buf[s:e]).decode())
        for d, t in zip(item.wide_rows.tolist(), _tokens(item.wide_texts)):
            tokens[d] = t
        rows = zip(item.rows.tolist(), item.ids.to_pylist(), item.n_bytes.tolist(), tokens)
        return [{"source": "c.jsonl", "row": r, "id": i, "error": None, "n_bytes": n, "tokens": t}
                for r, i, n, t in rows]  # fmt: skip
    rows = item.to_pylist()
    for r, t in zip(rows, _tokens([r["text"] for r in rows])):
        r["n_bytes"], r["tokens"] = (len(r["text"].encode()), t) if r["error"] is None else (None, None)
    return [{k: r[k] for k in fields} for r in rows]


def rows_of(path, chunk_bytes, skip=frozenset(), tokenise=False):
    """(rows `read_chunks` yields, rows ProX's reader yields), as `_rows` dicts; `tokenise`: pass a `Tokeniser`
    (plain chunks come as `TokenChunk`s)."""
    fs, _ = filesystem(str(path))
    (file,) = list_inputs(str(path))
    fields = ["source", "row", "id", "error", "n_bytes", "tokens"]
    tokeniser = reading.Tokeniser(INDEX.ascii_table) if tokenise else None
    got = [r for t in reading.read_chunks(fs, file, OPTIONS, skip, chunk_bytes, tokeniser) for r in _rows(t, fields)]
    want = [r for b in read_rows(fs, file, OPTIONS, skip) for r in _rows(pa.Table.from_pylist(b), fields)]
    return got, want


@pytest.mark.parametrize(
    "bad",
    [
        "",  # blank lines are not rows
        "   \t",
        "{broken json",
        "[1, 2]",
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "empty", "text": "  \u3000 "}),
        json.dumps({"id": 7, "text": "an integer id"}),
        json.dumps({"id": 7.5, "text": "a float id"}),
        json.dumps({"id": True, "text": "a boolean id"}),
        json.dumps({"text": "no id at all"}),
        json.dumps({"id": "x", "text": 5}),
        json.dumps({"id": "long", "text": "x" * 150}),  # over max_text_chars
        json.dumps({"id": "huge", "text": "y" * 3500}),  # over max_line_bytes
        '{"id": "sur", "text": "a lone \\ud800 surrogate"}',
        '{"id": "dup", "text": "first", "text": "second"}',
        '{"id": "two"} {"id": "objects", "text": "on one line"}',
        '{"id": "deep", "text": "t", "x": ' + "[" * 1100 + "]" * 1100 + "}",
        '{"id": "nan", "text": "t", "x": NaN}',
    ],
)
@pytest.mark.parametrize("tokenise", [False, True])
def test_every_line_reads_as_prox_reads_it(tmp_path, bad, tokenise):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(GOOD[:10] + [bad] + GOOD[10:]) + "\n", encoding="utf-8")
    for chunk_bytes in (64, 700, 1 << 20):  # a line per chunk, a few, the whole file
        got, want = rows_of(path, chunk_bytes, tokenise=tokenise)
        assert got == want


def test_clean_files_are_read_by_arrow_and_skips_apply(tmp_path, monkeypatch):
    path = tmp_path / "c.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + ("\n".join(GOOD) + "\n\n  \n").encode())  # BOM, trailing blank lines
    monkeypatch.setattr(reading, "_prox_chunks", lambda *a: pytest.fail("a clean file fell back to ProX"))
    got, want = rows_of(path, 700, skip=frozenset({0, 5, 29}))
    assert got == want and len(got) == 27
    path.write_bytes(b"\n".join(g.encode() for g in GOOD))  # no newline at the end
    got, want = rows_of(path, 700)
    assert got == want and len(got) == 30


def test_a_bad_line_hands_the_rest_of_the_file_to_prox(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(GOOD[:10] + ["{bad"] + GOOD[10:]) + "\n", encoding="utf-8")
    fs, _ = filesystem(str(path))
    (file,) = list_inputs(str(path))
    tables = list(reading.read_chunks(fs, file, OPTIONS, frozenset({12}), 700))
    rows = [r for t in tables for r in t.column("row").to_pylist()]
    assert rows == [r for r in range(31) if r != 12]  # each row once, in order
    assert pc.sum(pc.is_valid(tables[-1].column("error"))).as_py() == 1


def test_a_line_that_is_not_utf8_reads_as_prox_reads_it(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [g.encode() for g in GOOD]
    lines[4] = b'{"id": "latin1", "text": "caf\xe9"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    got, want = rows_of(path, 700)
    assert got == want and [r["error"] for r in got if r["error"]] == ["not_utf8"]


# Lines the compiled pass reads itself: every escape, ids of each kind, nesting, odd spacing, non-ASCII texts.
PLAIN = [
    r'{"id": "esc", "text": "Tab\there, \"quoted\", back\\slash\/ new\nline \b \f \r end"}',
    r'{"id": "u", "text": "\u0041BC d\u00e9f \u6771\u4eac \ud83d\ude00 x\u0000y ok"}',
    r'{"id": "mid", "text": "ab\u0063de fgh\"ij"}',
    '{"id": -12, "text": "integer id"}',
    '{"id": 0, "text": "zero id", "n": -0.5e+3}',
    '{"id": null, "text": "null id"}',
    '{"text": "no id", "other": {"a": [1, {"b": []}, {}], "c": "\\ud800 lone elsewhere"}, "t": true}',
    '  {  "text" :  "spaced out"  ,  "id" : "sp"  }  \r',
    r'{"id": "long", "text": "Supercalifragilistic expialidocious WORD w\u0000rd a-b_c 1,000.5"}',
    '{"id": "é東", "text": "ünïcödé text ＦＵＬＬ width"}',
    '{"id": "punct", "text": "!!!...??? done"}',
    r'{"id": "ctl", "text": "\u001c\u001fword\u000b"}',
    r'{"id": "ws", "text": "\u3000 x"}',
    "",
    "   ",
]


@pytest.mark.parametrize("chunk_bytes", [64, 700, 1 << 20])
def test_plain_lines_are_tokenised_by_the_compiled_pass(tmp_path, monkeypatch, chunk_bytes):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(PLAIN + GOOD) + "\n", encoding="utf-8")
    monkeypatch.setattr(reading, "_parse", lambda *a: pytest.fail("a plain chunk went to Arrow"))
    got, want = rows_of(path, chunk_bytes, tokenise=True)
    assert got == want and len(got) == len(PLAIN) - 2 + len(GOOD)


def test_tokenised_chunks_with_skipped_rows_are_read_by_arrow(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(PLAIN + GOOD) + "\n", encoding="utf-8")
    got, want = rows_of(path, 700, skip=frozenset({0, 20}), tokenise=True)
    assert got == want and {r["row"] for r in got}.isdisjoint({0, 20})


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("strip_punctuation", [True, False])
def test_the_compiled_translation_is_the_index_table(tmp_path, lowercase, strip_punctuation):
    """`text_tokens` computes the index's ASCII table (breaks, lower case) instead of looking it up: every ASCII
    character, under each normalisation, in texts longer than its 64-byte blocks, gives the index's tokens."""
    index = EvalIndex([["a"]], [1], NormalizeConfig(lowercase=lowercase, strip_punctuation=strip_punctuation))
    every = "".join(chr(c) for c in range(1, 128))
    texts = [f"w{c} {every} Mixed-CASE_words, {'x' * c} end." for c in range(0, 140, 7)] + ["A" * 200]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    fs, _ = filesystem(str(path))
    (file,) = list_inputs(str(path))
    (chunk,) = reading.read_chunks(fs, file, ReadOptions(), frozenset(), 1 << 20, reading.Tokeniser(index.ascii_table))
    buf, starts, ends, owner, *_ = chunk.spans
    got = [[] for _ in texts]
    for s, e, d in zip(starts.tolist(), ends.tolist(), owner.tolist()):
        got[d].append(bytes(buf[s:e]).decode())
    tokens, owner = index.tokens(texts)
    want = [[] for _ in texts]
    for t, d in zip(tokens.to_pylist(), owner.tolist()):
        want[d].append(t)
    assert got == want


def test_the_tokeniser_takes_only_an_index_table():
    table = INDEX.ascii_table.copy()
    table[ord("B")] = ord("B")  # A lowered, B kept: no index builds that
    with pytest.raises(ValueError, match="ascii_table"):
        reading.Tokeniser(table)
