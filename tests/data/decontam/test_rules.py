"""The rules on crafted cases: every boundary of issue 14's definitions (pure Python, no Ray)."""

import pytest

from rayflow.data.decontam import NormalizeConfig, check_example, tokenize, verdict


def words(n: int, stem: str = "w") -> list[str]:
    return [f"{stem}{i}" for i in range(n)]


def text(tokens: list[str]) -> str:
    return " ".join(tokens)


def test_tokens_nfkc_lowercase_punctuation_and_cjk():
    assert tokenize("Ｆｕｌｌ-Ｗｉｄｔｈ ＡＢＣ１２３") == ["full", "width", "abc123"]
    assert tokenize("Don't stop—ever!") == ["don", "t", "stop", "ever"]
    # Symbols (category S) are not punctuation: they stay inside tokens.
    assert tokenize("a+b=c $5 <x>") == ["a+b=c", "$5", "<x>"]
    assert tokenize("東京タワー、高い。") == ["東", "京", "タ", "ワ", "ー", "高", "い"]
    assert tokenize("서울은abc") == ["서", "울", "은", "abc"]
    # A punctuation mark inside a CJK block (U+30FB katakana middle dot, Po) is a space, not a token.
    assert tokenize("ア・イ") == ["ア", "イ"]
    # Compatibility ideographs (U+F900 block) are tokens; NFKC maps most to unified ones first.
    assert tokenize("x\uf9001") == ["x", "\u8c48", "1"]
    assert tokenize("  \t\n ") == [] and tokenize("...!!!") == []
    assert tokenize("ﬁne") == ["fine"]  # the ligature splits under NFKC
    assert tokenize("ABC", NormalizeConfig(lowercase=False)) == ["ABC"]


def test_gpt3_twelve_vs_thirteen_tokens():
    doc = text(["pre"] + words(13) + ["post"])
    thirteen, twelve = text(words(13)), text(words(12))
    v = check_example(thirteen, [doc])
    assert (v.dirty, v.score, v.bucket, v.n_ngrams) == (True, 1.0, None, 1)
    # 12 tokens: shorter than n, matched whole.
    v = check_example(twelve, [doc])
    assert (v.dirty, v.score, v.n_ngrams) == (True, 1.0, 0)
    # 12 tokens whose sequence is not contiguous in any document: 0.
    assert check_example(text(words(11) + ["w12"]), [doc]).score == 0.0
    # 14 tokens, one of its two 13-grams found: score 1/2, dirty under gpt3 (any).
    v = check_example(text(words(13) + ["zz"]), [doc])
    assert (v.dirty, v.score) == (True, 0.5)
    assert not check_example(text(words(13, "q")), [doc]).dirty


def test_palm_sixty_nine_vs_seventy_percent():
    # 17 tokens -> 10 8-grams; the document holds tokens 0..14 -> 8-grams 0..7 found (8/10 = 80%), etc.
    example = words(17)

    def found(k: int) -> float:
        doc = text(example[: 7 + k])  # exactly the first k 8-grams
        return check_example(text(example), [doc], "palm")

    assert (found(7).score, found(7).dirty) == (0.7, True)
    assert (found(6).score, found(6).dirty) == (0.6, False)
    # 69% exactly: 100 8-grams (107 tokens), 69 found.
    long = words(107)
    v69 = check_example(text(long), [text(long[:76])], "palm")
    v70 = check_example(text(long), [text(long[:77])], "palm")
    assert (v69.score, v69.dirty) == (0.69, False) and (v70.score, v70.dirty) == (0.70, True)
    # Short examples: whole match is 1.0 (dirty), else 0.
    assert check_example("a b c", ["x a b c y"], "palm").dirty
    assert not check_example("a b c", ["x a b y c"], "palm").dirty


def test_coverage_buckets_at_twenty_and_eighty_percent():
    # 1000 tokens; a document holding tokens 0..k-1 covers exactly k tokens (k >= 10).
    example = words(1000)

    def cov(k: int):
        return check_example(text(example), [text(example[:k])], "coverage")

    assert (cov(199).score, cov(199).bucket, cov(199).dirty) == (0.199, "clean", False)
    assert (cov(200).score, cov(200).bucket) == (0.2, "partial")
    assert (cov(799).bucket, cov(799).dirty) == ("partial", False)
    assert (cov(800).score, cov(800).bucket, cov(800).dirty) == (0.8, "dirty", True)
    assert cov(9).score == 0.0  # fewer than 10 tokens of it: no 10-gram found
    # Overlapping found 10-grams count each token once; gaps between them are not covered.
    doc_a, doc_b = text(example[:12]), text(example[20:30])
    assert check_example(text(example[:40]), [doc_a, doc_b], "coverage").score == 22 / 40
    # Short example under coverage: whole match -> 1.0 dirty; no tokens -> clean.
    assert check_example("a b", ["a b"], "coverage").bucket == "dirty"
    assert check_example("", ["a b"], "coverage").bucket == "clean"


def test_ngrams_never_cross_a_document_boundary():
    example = words(13)
    split = [text(example[:6]), text(example[6:])]
    for rule in ("gpt3", "palm", "coverage"):
        assert check_example(text(example), split, rule).score == 0.0
    assert check_example(text(example), [" ".join(split)]).score == 1.0
    # A short example split over two documents is not found whole either.
    assert check_example("a b c", ["x a", "b c y"]).score == 0.0


def test_case_punctuation_full_width_and_cjk_matches():
    example = "The quick brown fox jumps over the lazy dog near the old river bank today."
    doc = "THE QUICK, brown fox -- jumps over the 'lazy' dog; near the old river-bank today!!"
    assert check_example(example, [doc]).score == 1.0
    wide = "Ｔｈｅ ｑｕｉｃｋ ｂｒｏｗｎ ｆｏｘ jumps over the lazy dog near the old river bank today"
    assert check_example(example, [wide]).dirty
    zh = "光合作用是植物利用阳光把二氧化碳和水转化为葡萄糖的过程"
    assert check_example(zh, ["他说：" + zh.replace("阳光", "阳光，") + "。"]).dirty
    assert not check_example(zh, [zh[:12], zh[12:24], zh[24:]]).dirty  # no document holds 13 of it


def test_empty_example_and_unknown_rule():
    for rule in ("gpt3", "palm", "coverage"):
        v = check_example("  ...  ", ["anything at all"], rule)
        assert (v.score, v.dirty) == (0.0, False)
    assert check_example("", [""], "gpt3").bucket is None
    with pytest.raises(ValueError, match="rule: unknown rule 'gpt4'"):
        check_example("a", ["a"], "gpt4")


def test_verdict_from_positions_is_what_the_job_reduces_with():
    v = verdict("coverage", 25, {0, 5}, False)
    assert v.score == 15 / 25 and v.bucket == "partial" and v.n_found == 2 and v.n_ngrams == 16
    assert verdict("gpt3", 5, (), True).score == 1.0 and verdict("gpt3", 5, (), False).score == 0.0
