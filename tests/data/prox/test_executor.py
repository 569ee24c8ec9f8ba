"""ProX program parsing and execution: reference cases, hostile strings, and property-based fuzzing."""

import builtins
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rayflow.data.prox import ExecutorConfig, execute_chunk_program, execute_doc_program
from rayflow.data.prox.parser import (
    _FAST,
    FUNCTIONS_CHUNK,
    FUNCTIONS_DOC,
    parse_line,
    parse_program,
    parse_program_by_line,
    read_chunk_calls,
)
from rayflow.data.prox.reference import reference_chunk_execute, reference_doc_keep

DOC = """\
Home | About | Contact
Skip to content
How to bake sourdough bread at home with a simple starter and patience.
Mix flour and water, wait overnight, then add salt and knead the dough well.
Visit https://example.com/a,b?x=(1) for the full recipe, it has photos too.
She said "bake it hot" and the crust came out crisp and dark and lovely.
Bake at 250 degrees for forty minutes until the loaf sounds hollow.
Copyright 2024 Example Bakery. All rights reserved."""


def run(program, text=DOC, **cfg):
    return (
        execute_chunk_program(text, program, ExecutorConfig(**cfg))
        if cfg
        else execute_chunk_program(text, program)
    )


# -- doc level --------------------------------------------------------------------------------------------


def test_doc_program_drops_only_on_a_valid_drop_call():
    assert not execute_doc_program("drop_doc()").keep
    assert not execute_doc_program("  drop_doc()  # spam\n").keep
    assert execute_doc_program("keep_doc()").keep
    assert execute_doc_program("# should we drop this? no\nkeep_doc()").keep  # the reference drops this one
    assert not reference_doc_keep("# should we drop this? no\nkeep_doc()")
    assert execute_doc_program("dropped_doc()").keep


@pytest.mark.parametrize(
    "program", ["", "   \n\n", "The document is fine.", "drop_doc(", "drop_doc(1)", "```"]
)
def test_empty_or_unreadable_doc_program_keeps_and_is_counted(program):
    result = execute_doc_program(program)
    assert result.keep and result.parse_failed


def test_doc_program_error_and_unknown_counts():
    result = execute_doc_program("drop_doc(reason='x')\nfoo()\nkeep_doc()")
    assert result.keep and result.n_error_ops == 1 and result.n_unknown_calls == 1 and result.n_calls == 1


# -- chunk level: the reference's semantics ---------------------------------------------------------------


def test_remove_lines_inclusive_and_normalize_first():
    result = run(
        'remove_lines(line_start=0, line_end=1)\nnormalize(source_str="Bake at", target_str="Roast at")'
    )
    lines = result.text.split("\n")
    assert lines[0].startswith("How to bake") and len(lines) == 6
    assert "Roast at 250" in result.text and result.kept and result.n_error_ops == 0
    assert result.lines_removed == 2 and result.normalizations == (("Bake at", "Roast at"),)


def test_out_of_range_intervals_are_errors_clipped_and_merged():
    # End past the last line: clipped and counted (the program still applies: one error is under the limit).
    result = run("remove_lines(line_start=7, line_end=99)")
    assert result.n_error_ops == 1 and not result.fallback and "Copyright" not in result.text
    # Start past the end: one error; two such intervals that touch merge into one error.
    assert (
        run("remove_lines(line_start=20, line_end=21)\nremove_lines(line_start=22, line_end=23)").n_error_ops
        == 1
    )
    # Two errors reach the limit: the original text comes back.
    result = run("remove_lines(line_start=20, line_end=21)\nremove_lines(line_start=30, line_end=31)")
    assert result.n_error_ops == 2 and result.fallback and result.text == DOC


def test_decision_rule_ratio_and_min_words_and_empty():
    assert run("remove_lines(all=True)").drop_reason == "ratio"
    # Everything but a 9-word line: ratio above 0.05 but <= 10 words.
    text = "one two three four five six seven eight nine\n" + "\n".join(["a b"] * 50)
    result = execute_chunk_program(text, "remove_lines(line_start=1, line_end=50)")
    assert result.drop_reason == "min_words" and result.text == "" and not result.kept
    assert execute_chunk_program("", "keep_chunk()").drop_reason == "empty"
    assert execute_chunk_program(" \n\t\n", "").drop_reason == "empty"
    # Thresholds are configurable: with min_words=5 the 9 words stay.
    assert run("remove_lines(line_start=0, line_end=6)", min_words=5).kept


def test_keep_chunk_and_unknown_calls_change_nothing():
    result = run("keep_chunk()\nuntouch_doc()\nprint('hi')\nos.system('rm -rf /')\n# a comment\n\n")
    assert (
        result.text == DOC and result.n_error_ops == 0 and result.n_unknown_calls == 2 and result.n_calls == 2
    )


@pytest.mark.parametrize(
    "line, errors",
    [
        ("remove_lines(1, 2)", 1),  # positional
        ("remove_lines(line_start=1)", 1),  # missing argument
        ("remove_lines(line_start=a, line_end=2)", 1),  # not a literal
        ('remove_lines(line_start="1", line_end=2)', 1),  # not an int
        ("remove_lines(line_start=1.0, line_end=2)", 1),
        ("remove_lines(all=False)", 1),
        ("remove_lines", 1),
        ("remove_lines(line_start=1, line_end=", 2),  # cut off at the token limit: as the reference counts
        ("remove_lines(", 2),
        ("normalize()", 1),
        ('normalize("x")', 1),
        ("normalize(source_str=x)", 1),
        ('normalize(source_str="x", target_str="y", n=1)', 1),
    ],
)
def test_invalid_calls_are_error_ops_without_effect(line, errors):
    result = run(line)
    assert result.n_error_ops == errors and result.n_calls == 0
    assert result.text == DOC  # no effect (fallback or not)


def test_strings_may_hold_commas_parentheses_quotes_equals_and_urls():
    assert (
        "Visit" not in run('normalize(source_str="Visit https://example.com/a,b?x=(1) ", target_str="")').text
    )
    result = run(r"""normalize(source_str="She said \"bake it hot\"", target_str='They said \'go\'')""")
    assert "They said 'go' and the crust" in result.text
    # Only the delimiting quote is escaped; any other backslash is text, as the reference reads it.
    result = run(r"""normalize(source_str="She said", target_str="a\'b")""")
    assert result.normalizations == (("She said", "a\\'b"),)
    # Quotes copied from the document without escaping: not Python, but the reference reads them right.
    result = run('normalize(source_str="She said "bake it hot" and", target_str="")  # quote')
    assert result.n_error_ops == 0 and "the crust came out" in result.text and "She said" not in result.text
    assert (
        result.text == reference_chunk_execute(DOC, 'normalize(source_str="She said "bake it hot" and")')[0]
    )
    assert run('normalize(source_str="She said " "bake")').normalizations == ()  # no such text: not joined
    assert "said it" in run("normalize(source_str='She said \"bake it hot\" and', target_str='said it')").text
    result = run('normalize(source_str="a,b?x=(1)", target_str="q=1, r=(2)")  # trailing comment')
    assert "example.com/q=1, r=(2) for" in result.text
    # The reference misreads these: it cuts the argument at the first `)` and the first `,`, then replaces
    # every "a" in the document.
    assert "Cont(1ct" in reference_chunk_execute(DOC, 'normalize(source_str="a,b?x=(1)", target_str="")')[0]


def test_backslashes_are_literal_like_the_document():
    text = "The formula \\frac{a}{b} appears in many places in this long math text about fractions today.\nok"
    result = execute_chunk_program(text, 'normalize(source_str="\\frac", target_str="FRAC")')
    assert "FRAC{a}{b}" in result.text
    assert (
        result.text == reference_chunk_execute(text, 'normalize(source_str="\\frac", target_str="FRAC")')[0]
    )


def test_reference_quirks_for_space_sources():
    # One argument: every space goes, so eight one-"word" lines remain and the document is dropped.
    assert run('normalize(source_str=" ")').drop_reason == "min_words"
    assert reference_chunk_execute(DOC, 'normalize(source_str=" ")')[0] == ""
    assert run('normalize(source_str=" ", target_str="_")').text == DOC  # two arguments: never
    assert run('normalize(source_str="", target_str="_")').text == DOC


def test_leading_zero_line_numbers_read_as_the_reference_reads_them():
    assert (
        run("remove_lines(line_start=000, line_end=001)").text
        == run("remove_lines(line_start=0, line_end=1)").text
    )
    assert run("remove_lines( line_start = 0 , line_end = 1 )").lines_removed == 2


def test_hostile_programs_are_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    calls = []
    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, lambda *a, **k: calls.append(a))
    hostile = "\n".join(
        [
            f"__import__('os').system('touch {marker}')",
            f"normalize(source_str=__import__('os').system('touch {marker}'))",
            f"remove_lines(line_start=open('{marker}', 'w').write('x'), line_end=2)",
            "remove_lines(line_start=(lambda: 1)(), line_end=2)",
            "normalize(source_str=f\"{__import__('os').getcwd()}\")",
            "remove_lines(**{'line_start': 1, 'line_end': 2})",
            "(" * 500 + ")" * 500,
            "normalize(source_str='\x00')",
        ]
    )
    result = run(hostile)
    assert not marker.exists() and not calls
    assert result.n_error_ops >= 4 and result.fallback


# -- properties -----------------------------------------------------------------------------------------

WORDS = ["alpha", "beta", "gamma", "delta", "home", "menu", "©", "click", "here", "the", "a", "of", "x"]
# Words with quotes and backslashes, which models copy into strings as they are.
QUOTED = ['"hi"', "say", '"hi" x', 'say"', "it's", "C:\\dir", "\\frac", "a\\'b", "'q'"]
# Characters the reference's parser reads correctly inside strings: anything but , ) = and \n.
SAFE_CHARS = st.characters(blacklist_characters=",)=\n")


def reference_reads_correctly(string: str) -> bool:
    """The reference strips every `"` at the ends of a string and does not know escaped quotes."""
    return string.strip('"') == string and '\\"' not in string


@st.composite
def documents(draw):
    n = draw(st.integers(1, 25))
    lines = [" ".join(draw(st.lists(st.sampled_from(WORDS + QUOTED), max_size=12))) for _ in range(n)]
    return "\n".join(lines)


@st.composite
def reference_readable_lines(draw, text):
    n_lines = len(text.split("\n"))
    kind = draw(
        st.sampled_from(["remove", "remove", "normalize1", "normalize2", "all", "noise", "bad", "cut"])
    )
    index = st.integers(-3, n_lines + 3)
    if kind == "remove":
        return f"remove_lines(line_start={draw(index)}, line_end={draw(index)})"
    words = st.sampled_from(WORDS + QUOTED + ["home menu", 'say "hi" x', '"hi" x', " ", ""])
    source = draw(st.one_of(words, st.text(SAFE_CHARS, max_size=6)))
    assume(reference_reads_correctly(source))
    if kind == "normalize1":
        return f'normalize(source_str="{source}")'
    if kind == "normalize2":
        target = draw(
            st.one_of(st.just(""), st.sampled_from(WORDS + QUOTED), st.text(SAFE_CHARS, max_size=4))
        )
        assume(reference_reads_correctly(target))
        return f'normalize(source_str="{source}", target_str="{target}")'
    if kind == "all":
        return "remove_lines(all=True)"
    if kind == "noise":
        return draw(
            st.sampled_from(
                ["keep_chunk()", "untouch_doc()", "# remove the menu", "", "foo(1, 2)", "drop_doc()"]
            )
        )
    if kind == "bad":
        return draw(
            st.sampled_from(
                ["remove_lines(3, 4)", "remove_lines(line_start=2)", "normalize()", "remove_lines"]
            )
        )
    full = f"remove_lines(line_start={draw(index)}, line_end={draw(st.integers(10, 99))})"
    cut = full[: draw(st.integers(12, len(full) - 3))]  # cut off before the last digit: no partial interval
    return cut


@st.composite
def readable_programs(draw):
    text = draw(documents())
    lines = draw(st.lists(reference_readable_lines(text), max_size=8))
    return text, "\n".join(lines)


@settings(max_examples=400, deadline=None)
@given(readable_programs())
def test_equals_the_reference_on_programs_it_reads_correctly(case):
    text, program = case
    assume(len(text.split()) > 0)
    expected, expected_errors = reference_chunk_execute(text, program)
    result = execute_chunk_program(text, program)
    assert result.text == expected
    assert result.n_error_ops == expected_errors


WS = st.sampled_from(["", " ", "  ", "\t", "\xa0"])
INT_TEXT = st.from_regex(r"[+-]?[0-9]{1,4}", fullmatch=True)
WELL_FORMED = st.one_of(
    st.builds(
        "remove_lines({0}line_start{1}={2}{6}{3},{4}line_end={5}{7}){1}".format,
        WS,
        WS,
        WS,
        WS,
        WS,
        WS,
        INT_TEXT,
        INT_TEXT,
    ),
    st.builds('normalize({0}source_str={1}"{2}"{3})'.format, WS, WS, st.text(max_size=12), WS),
    st.builds(
        'normalize(source_str="{0}",{1}target_str="{2}"{1}){3}'.format,
        st.text(max_size=12),
        WS,
        st.text(max_size=8),
        st.sampled_from(["", "  # note", "#", " # \r x"]),
    ),
    st.builds(
        "{0}({1}){2}".format, st.sampled_from(["keep_chunk", "untouch_doc", "drop_doc", "keep_doc"]), WS, WS
    ),
    st.builds(
        "remove_lines({0}all{1}={2}True{0}){3}".format, WS, WS, WS, st.sampled_from(["", " # x", "\r"])
    ),
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(WELL_FORMED, st.text(max_size=60)))
def test_fast_path_agrees_with_the_ast_path(line):
    line = line.strip()
    assume(line and line[0] != "#" and "\n" not in line)
    for functions in (FUNCTIONS_CHUNK, FUNCTIONS_DOC):
        if _FAST[functions].fullmatch(line):
            fast = parse_program(line, functions)
            assert parse_line(line, functions) == (list(fast.ops), 0, 0) and len(fast.ops) == 1


# Line edges the whole-program pass must leave to the line-by-line reading: other whitespace, CRs, comments.
EDGES = st.sampled_from(["", " ", "\t", "\r", "\x0c", "\xa0", " # c", "#", "\x1c", "\ufeff"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(EDGES, st.one_of(WELL_FORMED, st.text(max_size=40)), EDGES), max_size=8))
def test_whole_program_reading_equals_line_by_line_reading(lines):
    program = "\n".join(a + line + b for a, line, b in lines)
    for functions in (FUNCTIONS_CHUNK, FUNCTIONS_DOC):
        assert parse_program(program, functions) == parse_program_by_line(program, functions)
    # The executor's one-pass reading sorts the same calls by kind.
    ops, n_error, n_unknown = parse_program(program, FUNCTIONS_CHUNK)
    assert read_chunk_calls(program) == (
        [(a, b) for name, a, b in ops if name == "remove_lines" and a is not None],
        [(a, b) for name, a, b in ops if name == "normalize"],
        ("remove_lines", None, None) in ops,
        len(ops),
        n_error,
        n_unknown,
    )


@settings(max_examples=300, deadline=None)
@given(readable_programs())
def test_reference_semantics_equals_the_reference(case):
    text, program = case
    assume(len(text.split()) > 0)
    result = execute_chunk_program(text, program, ExecutorConfig(semantics="reference"))
    assert (result.text, result.n_error_ops) == reference_chunk_execute(text, program)
    assert execute_doc_program(program, ExecutorConfig(semantics="reference")).keep == reference_doc_keep(
        program
    )


CALLISH = st.one_of(
    st.text(max_size=60),
    st.builds(
        "{}({}{})".format,
        st.sampled_from(["remove_lines", "normalize", "keep_chunk", "drop_doc", "os.system", "__import__"]),
        st.sampled_from(["line_start=", "source_str=", "target_str=", "all=", "", "line_end="]),
        st.text(max_size=30),
    ),
    st.builds(
        'normalize(source_str="{}", target_str="{}")'.format, st.text(max_size=20), st.text(max_size=10)
    ),
    st.builds("remove_lines(line_start={}, line_end={})".format, st.integers(-5, 40), st.integers(-5, 40)),
)


@settings(max_examples=250, deadline=None)
@given(documents(), st.lists(CALLISH, max_size=10))
def test_fuzzed_programs_never_raise_and_only_remove_normalised_lines(text, lines):
    program = "\n".join(lines)
    result = execute_chunk_program(text, program)
    execute_doc_program(program)
    if not result.kept or result.fallback:
        assert result.text in ("", text)
        return
    normalized = text
    for source, target in result.normalizations:
        normalized = normalized.replace(source, target)
    remaining = iter(normalized.split("\n"))
    assert all(any(line == other for other in remaining) for line in result.text.split("\n"))


def test_parse_program_counts():
    parsed = parse_program(
        "remove_lines(line_start=1, line_end=2)\nfoo()\nremove_lines(1)\n# c", FUNCTIONS_CHUNK
    )
    assert len(parsed.ops) == 1 and parsed.n_unknown_calls == 1 and parsed.n_error_ops == 1
    assert re.fullmatch(r"\d+", "12")
