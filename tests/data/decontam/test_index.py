"""The scan index: its hits equal a brute-force search, whatever the Bloom filter's false-positive rate; the
Arrow tokenisation of ASCII documents equals `tokenize`; GPT-3's corpus filter (pure Python, no Ray)."""

import pickle
import random
import unicodedata

import numpy as np

from rayflow.data.decontam import RULES, NormalizeConfig, check_example, kernels, tokenize
from rayflow.data.decontam.clean import FilterConfig, clean_document, token_spans
from rayflow.data.decontam.index import EvalIndex, _nfkc, ngram_hash, token_value
from rayflow.data.decontam.rules import DEFAULT_RULES, verdict

NORM = NormalizeConfig()
VOCAB = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "東", "京", "Ｘｙ"]


def brute_force(examples: list[list[str]], docs: list[str], lengths) -> list[set]:
    """Per document, every (example, length, example position, document position) by direct comparison."""
    out = []
    for doc in docs:
        toks = tokenize(doc)
        found = set()
        for ex, seq in enumerate(examples):
            for m in lengths:
                starts = range(len(seq) - m + 1) if m <= len(seq) else ()
                if m not in (8, 10, 13):
                    starts = range(1) if m == len(seq) else ()
                for p in starts:
                    gram = seq[p : p + m]
                    for d in range(len(toks) - m + 1):
                        if toks[d : d + m] == gram:
                            found.add((ex, m, p, d))
        out.append(found)
    return out


def test_hits_are_exact_even_with_a_very_leaky_bloom_filter():
    rnd = random.Random(7)
    examples_text = [" ".join(rnd.choice(VOCAB) for _ in range(rnd.randint(0, 20))) for _ in range(12)]
    examples = [tokenize(t) for t in examples_text]
    docs = []
    for _ in range(40):
        words = [rnd.choice(VOCAB + ["other", "ζ", "!!", "Alpha,"]) for _ in range(rnd.randint(0, 60))]
        if rnd.random() < 0.5:  # plant part of an example, in a different case
            src = rnd.choice(examples_text).upper().split()
            at = rnd.randint(0, len(words))
            words[at:at] = src[: rnd.randint(0, len(src))]
        docs.append(" ".join(words))
    strict = EvalIndex(examples, [13, 8, 10], NORM, bloom_fpr=1e-4)
    leaky = pickle.loads(pickle.dumps(EvalIndex(examples, [13, 8, 10], NORM, bloom_fpr=0.9)))
    expected = brute_force(examples, docs, strict.lengths)
    assert sum(map(len, expected)) > 50  # the test has hits to find
    for index in (strict, leaky):
        got = [set(h) for h in index.scan(docs)]
        assert got == expected
    assert {m for m in strict.lengths if m not in (8, 10, 13)}  # short examples are indexed whole


def test_window_hash_matches_the_eval_side_hash():
    index = EvalIndex([["a", "b", "c", "d"]], [2], NORM)
    v = [token_value(t) for t in "abcd"]
    assert [(m, g) for m in index.exact for g in index.exact[m]] == [(2, (v[0], v[1])), (2, (v[1], v[2])),
                                                                     (2, (v[2], v[3]))]  # fmt: skip
    assert index.scan(["x c d"]) == [[(0, 2, 2, 1)]]
    assert ngram_hash([v[0], v[1]]) != ngram_hash([v[1], v[0]])


def test_token_values_are_exact_for_short_tokens_and_long_ones_are_checked_as_bytes():
    words = ["a", "ab", "abcdefg", "abcdefgh", "abcdefghi", "東京", "x" * 300, "x" * 299 + "y", "é" * 5, "n\0", "n"]
    tokens = tokenize(" ".join(words))
    index = EvalIndex([tokens], [1], NORM)
    ascii_text = "ASCII only: " + " ".join(tokens[:4])
    buf, starts, ends, owner, _, values, long = index._spans([" ".join(tokens), ascii_text])
    assert owner.tolist() == [1] * 6 + [0] * len(tokens)  # grouped: ASCII texts first
    tokens = tokenize(ascii_text) + tokens
    assert values.tolist() == [token_value(t) for t in tokens]
    again = kernels.token_values(np.frombuffer(buf, np.uint8), starts, ends)  # the Unicode path's kernel
    assert again[0].tolist() == values.tolist() and again[1].tolist() == long.tolist()
    assert long.tolist() == [token_value(t) >> 56 == 0xFF for t in tokens]
    assert len({token_value(t) for t in tokens}) == len(set(tokens))
    assert token_value("ab") == int.from_bytes(b"ab", "little")  # its bytes: equal values, equal tokens
    assert token_value("n\0") >> 56 == token_value("abcdefghi") >> 56 == 0xFF  # hashed: bytes re-checked
    # A long token's value is a hash: a window matching on values still needs the bytes. Make the example's
    # token hold other bytes under the same value, as a hash collision would: the match goes.
    long_a, long_b = "q" * 9, "r" * 9  # 9 bytes: long
    index = EvalIndex([[long_a, "z"]], [2], NORM)
    assert index.scan([f"{long_a} z", f"{long_b} z"]) == [[(0, 2, 0, 0)], []]
    index.long_tokens[token_value(long_a)] = long_b.encode()
    assert index.scan([f"{long_a} z"]) == [[]]


def test_longer_ngrams_are_read_off_the_gate_hits_within_one_document():
    seq = [f"w{i}" for i in range(20)]
    index = EvalIndex([seq], [4, 6, 13], NORM)  # 13 = gate 4 at offsets 0, 4, 8 and 9
    doc = " ".join(seq[2:16])  # tokens 2..15 of the example: 13-grams at 2 and 3
    got = set(index.scan([doc])[0])
    assert {(p, d) for ex, m, p, d in got if m == 13} == {(2, 0), (3, 1)}
    assert {(p, d) for ex, m, p, d in got if m == 6} == {(p, p - 2) for p in range(2, 11)}
    # The same tokens split over two documents match nowhere across the boundary.
    split = index.scan([" ".join(seq[2:9]), " ".join(seq[9:16])])
    assert not [h for hits in split for h in hits if h[1] == 13]


def test_ascii_fast_path_tokenises_like_tokenize():
    rnd = random.Random(3)
    alphabet = "abcXYZ019 .,;:!?'\"-_()[]{}@#%&*/\\$+<=>^`|~\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 50))) for _ in range(500)]
    texts += ["mixed ascii and 東京 text", "Ｆｕｌｌ width"]
    for cfg in (NORM, NormalizeConfig(lowercase=False, strip_punctuation=False)):
        index = EvalIndex([["a"]], [1], cfg)
        tokens, owner = index.tokens(texts)
        flat = tokens.to_pylist()
        for i, t in enumerate(texts):
            assert [flat[j] for j in (owner == i).nonzero()[0]] == tokenize(t, cfg), t
    # Values from the 8-byte loads: tokens of 1-20 bytes (NULs inside some) at document starts and ends.
    texts = [" ".join("".join(rnd.choice("ab\0") for _ in range(rnd.randint(1, 20))) for _ in range(rnd.randint(0, 4)))
             for _ in range(300)]  # fmt: skip
    buf, starts, ends, owner, _, values, long = EvalIndex([["a"]], [1], NORM)._spans(texts)
    tokens = [(d, t) for d, text in enumerate(texts) for t in tokenize(text)]
    assert list(zip(owner.tolist(), [buf[s:e].decode() for s, e in zip(starts, ends)])) == tokens
    assert values.tolist() == [token_value(t) for _, t in tokens]
    assert long.tolist() == [token_value(t) >> 56 == 0xFF for _, t in tokens]


def test_gpt3_filter_cuts_around_hits_and_drops_heavily_hit_documents():
    cfg = FilterConfig(window_chars=5, max_hits=2, min_fragment_chars=4)
    text = "aaaa bbbb cc dd ee ffff gggg"
    spans = token_spans(text, NORM)
    assert [text[a:b] for a, b in spans] == tokenize(text)
    # A hit of n=2 at token 2 ("cc dd", characters 10-15) cuts characters 5-20.
    assert clean_document(text, [2], 2, cfg, NORM) == ["aaaa ", "fff gggg"]
    assert clean_document(text, [], 2, cfg, NORM) == [text]
    assert clean_document(text, [0, 2, 4], 2, cfg, NORM) == []  # more than max_hits
    assert clean_document(text, [0], 2, FilterConfig(window_chars=0, min_fragment_chars=100), NORM) == []
    assert token_spans("Ｈｉ, 東京!", NORM) == [(0, 2), (4, 5), (5, 6)]


def test_scan_verdicts_equal_check_example_on_edge_cases_even_when_every_window_is_a_candidate():
    """Short documents and examples, Unicode (full-width, CJK, accents, NUL, long tokens), copies planted at the
    very start and end of documents and split across two; with every window let through both filters (as if
    every hash collided), exact confirmation alone decides, and verdicts still equal the plain scan's."""
    rnd = random.Random(11)
    words = ["ａｌｐｈａ", "Beta", "東京", "naïve", "x" * 12, "ß", "n\0", "ǅ", "omega", "k"]
    examples = [" ".join(rnd.choice(words) for _ in range(n)) for n in (0, 1, 5, 8, 9, 12, 13, 14, 30)]
    docs = ["", "omega", " ".join(examples[4].split()[:3])]
    for text in examples[1:]:
        toks = text.split()
        docs += [text.upper() + " tail", "head, " + text, " ".join(toks[: len(toks) // 2])]
        docs.append(" ".join(toks[len(toks) // 2 :]) + " " + rnd.choice(words))  # the other half, next document
    index = pickle.loads(pickle.dumps(EvalIndex([tokenize(e) for e in examples], [13, 8, 10], NORM, 0.9)))
    for m, (bitmap, shift) in index.bitmaps.items():
        index.bitmaps[m] = (np.full_like(bitmap, np.iinfo(np.uint64).max), shift)
    found: list[dict[int, set[int]]] = [{} for _ in examples]
    for hits in [*index.scan(docs[:7]), *index.scan(docs[7:])]:  # two batches: documents never span them
        for ex, m, pos, _ in hits:
            found[ex].setdefault(m, set()).add(pos)
    for ex, text in enumerate(examples):
        n_tokens = len(tokenize(text))
        for rule in RULES:
            n = DEFAULT_RULES.n(rule)
            got = verdict(rule, n_tokens, found[ex].get(n, ()), 0 in found[ex].get(n_tokens, ()))
            want = check_example(text, docs, rule)
            assert (got.score, got.dirty, got.bucket) == (want.score, want.dirty, want.bucket), (ex, rule)
    assert sum(check_example(e, docs).dirty for e in examples) >= 6  # the planted copies are there to find


def test_nfkc_of_the_non_ascii_words_is_nfkc_of_the_text():
    """`index._nfkc` normalises only the span of a text's non-ASCII words: the same as NFKC of the whole text,
    with composing, reordering and compatibility characters beside, between and inside words."""
    parts = ["a", " ", "  ", "\u0301", "\u0327", "é", "e", "Ｆ", "ﬁ", "\u3000", "한", "ᄒ", "ᅡ", "ᆨ", "Σ", "ㄱ",
             "\u00a8", "\u00a0", "Ⅳ", "①", "x\u0308", "\u1e9b\u0323", "Å", "\u212b", "\u0344", "\u0f73", "𝐀", "\u0958",
             "\u2000", "\0", "plain words", "A"]  # fmt: skip
    rnd = random.Random(0)
    texts = ["".join(rnd.choices(parts, k=rnd.randint(0, 12))) for _ in range(3000)]
    texts += [f"{c} \u0301x {c}" for c in ["", *parts]]
    assert _nfkc(texts) == [unicodedata.normalize("NFKC", t) for t in texts]
    assert _nfkc(["all ascii", ""]) == ["all ascii", ""]
