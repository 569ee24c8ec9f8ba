"""The scan index: its hits equal a brute-force search, whatever the Bloom filter's false-positive rate; the
Arrow tokenisation of ASCII documents equals `tokenize`; GPT-3's corpus filter (pure Python, no Ray)."""

import pickle
import random

from rayflow.data.decontam import NormalizeConfig, tokenize
from rayflow.data.decontam.clean import FilterConfig, clean_document, token_spans
from rayflow.data.decontam.index import EvalIndex, ngram_hash

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
    assert [(m, g) for m in index.exact for g in index.exact[m]] == [(2, (0, 1)), (2, (1, 2)), (2, (2, 3))]
    assert index.scan(["x c d"]) == [[(0, 2, 2, 1)]]
    assert ngram_hash([0, 1]) != ngram_hash([1, 0])


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
