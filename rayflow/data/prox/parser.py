"""ProX programs -> operations, read with Python's `ast` and never executed.

A program is text, one call per line, written by a model (or the rules generator). Each line is read on its
own, so one broken line costs one operation, not the program:

* blank lines and `#` comments are ignored;
* a call to a function of the program's level (`FUNCTIONS_DOC` or `FUNCTIONS_CHUNK`) with literal keyword
  arguments becomes an operation;
* a call to any other function is ignored and counted (`n_unknown_calls`);
* a line that names a known function but is not a valid keyword call of it (a syntax error, positional
  arguments, a missing, unknown or non-literal argument) is an *error op*. It has no effect, and counts as
  many error ops as the reference's string parser would count for it (at least one): a line cut off at the
  token limit, `remove_lines(line_start=3, line_end=`, is two, as in the reference;
* any other line (prose, markdown fences) is ignored.

String arguments may hold any characters (commas, parentheses, `=`, URLs, `#`). Inside `"..."`, `\\"` is an
escaped quote (inside `'...'`, `\\'`); every other backslash is kept as written, as the reference keeps it: the
model copies text from the document, so `normalize(source_str="\\frac")` means the five characters of the
document, not a form feed. Integer arguments are read as the reference reads them (`int` of the literal's text),
so `003` is 3.

Models copy quotes from the document without escaping them: `normalize(source_str="say "hi" now")` is not
Python, yet the reference reads it right (the text between the outer quotes). A `normalize` line that Python
cannot read is therefore read as the reference reads it when that reading is unambiguous (keyword arguments,
no `,` `)` `=` or line break inside the strings, nothing but a comment after the `)`); otherwise it is an
error op.

Well-formed lines take a regex fast path (one C call per line) that is a strict subset of the `ast` path
with the same result; the property tests check that the two agree.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from typing import NamedTuple

FUNCTIONS_DOC = frozenset({"drop_doc", "keep_doc"})
FUNCTIONS_CHUNK = frozenset({"remove_lines", "normalize", "keep_chunk", "untouch_doc"})
# No-op functions: the reference ignores these lines whatever they hold, so they are never error ops.
_NO_OPS = frozenset({"keep_chunk", "untouch_doc"})


Op = tuple[str, object, object]
"""One valid call, `(name, a, b)`; plain tuples, since every line of every program makes one.

`remove_lines`: `a, b` = line_start, line_end, or `a = b = None` for `all=True`. `normalize`: `a` = source_str,
`b` = target_str, or None when the call gives only source_str (the reference treats the one-argument form
differently, see the executor). Other functions: `a = b = None`.
"""


class ParsedProgram(NamedTuple):
    ops: tuple[Op, ...]
    n_error_ops: int
    n_unknown_calls: int


# Characters the fast path never accepts inside strings or comments, because Python's tokenizer treats them
# differently from plain text (a line break, a NUL, a lone surrogate) and the ast path must decide.
_PLAIN = r"[^\"\\\n\r\x00\ud800-\udfff]"
_COMMENT = r"#[^\n\r\x00\ud800-\udfff]*"
_WS = r"[ \t]*"
_TAIL = rf"{_WS}(?:{_COMMENT})?"
_INT = r"([+-]?[0-9]+)"
_REMOVE = rf"remove_lines\({_WS}line_start{_WS}={_WS}{_INT}{_WS},{_WS}line_end{_WS}={_WS}{_INT}{_WS}\)"
_NORMALIZE = (
    rf"normalize\({_WS}source_str{_WS}={_WS}\"({_PLAIN}*)\"{_WS}"
    rf"(,{_WS}target_str{_WS}={_WS}\"({_PLAIN}*)\"{_WS})?\)"
)
_REMOVE_ALL = rf"remove_lines\({_WS}all{_WS}={_WS}True{_WS}\)"
# One regex per level reads a well-formed line in one C call. Groups (chunk): 1-2 remove_lines start/end,
# 3 source_str, 4 the target_str part (it encloses 5, target_str, so it closes last), 6 a no-op function's
# name; (doc) 1 the function's name. The last group to close (`lastindex`) tells the alternatives apart, and
# `remove_lines(all=True)` is the one alternative with no group (`lastindex` None).
_FAST = {
    FUNCTIONS_CHUNK: re.compile(
        rf"(?:{_REMOVE}|{_REMOVE_ALL}|{_NORMALIZE}|(keep_chunk|untouch_doc)\({_WS}\)){_TAIL}"
    ),
    FUNCTIONS_DOC: re.compile(rf"(drop_doc|keep_doc)\({_WS}\){_TAIL}"),
}
# The same calls read for a whole program in one `findall`, one tuple per line (`re.M`): the fast alternatives
# above, a comment line, or anything else (the last group), which goes through the line-by-line reading. String
# groups keep their quotes, so an empty string (`""`) is told apart from an absent group (``).
_STR_Q = rf"(\"{_PLAIN}*\")"
_LINES = {
    FUNCTIONS_CHUNK: re.compile(
        rf"^{_WS}(?:(?:{_REMOVE}|remove_lines\({_WS}(all){_WS}={_WS}True{_WS}\)"
        rf"|normalize\({_WS}source_str{_WS}={_WS}{_STR_Q}{_WS}(?:,{_WS}target_str{_WS}={_WS}{_STR_Q}{_WS})?\)"
        rf"|(keep_chunk|untouch_doc)\({_WS}\)){_TAIL}|#[^\n]*|(.+?))?{_WS}$",
        re.MULTILINE,
    ),
    FUNCTIONS_DOC: re.compile(
        rf"^{_WS}(?:(drop_doc|keep_doc)\({_WS}\){_TAIL}|#[^\n]*|(.+?))?{_WS}$", re.MULTILINE
    ),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The reference's own reading of a normalize line, where it is unambiguous: quotes may appear inside the strings
# (the reference strips only the outer ones), but no `,` `)` `=` (where it would cut the string) or line break.
_REF_STRING = r"[^,)=\n]*"
_REFERENCE_NORMALIZE = re.compile(
    rf'normalize\(source_str="({_REF_STRING})"(,{_WS}target_str="({_REF_STRING})")?\){_TAIL}'
)


def parse_program(program: str, functions: frozenset[str]) -> ParsedProgram:
    """Read every line of `program`; `functions` is `FUNCTIONS_DOC` or `FUNCTIONS_CHUNK`."""
    ops, n_error, n_unknown = read_program(program, functions)
    return ParsedProgram(tuple(ops), n_error, n_unknown)


def read_program(program: str, functions: frozenset[str]) -> tuple[list[Op], int, int]:
    """`parse_program` as a plain `(ops, n_error_ops, n_unknown_calls)`: the executor's hot path.

    One `findall` reads every line; well-formed lines (nearly all of a model's) cost one tuple each, any other
    line goes through `_read_line`, the line-by-line reading (`parse_program_by_line` reads every line so).
    """
    ops: list[Op] = []
    n_error = n_unknown = 0
    if "remove_lines" in functions:
        for start, end, all_, source, target, noop, other in _LINES[functions].findall(program):
            if start:
                ops.append(("remove_lines", int(start), int(end)))
            elif source:
                ops.append(("normalize", source[1:-1], target[1:-1] if target else None))
            elif all_ or noop:
                ops.append((noop or "remove_lines", None, None))
            elif other:
                line_ops, errors, unknown = _read_line(other, functions)
                ops.extend(line_ops)
                n_error += errors
                n_unknown += unknown
    else:
        for name, other in _LINES[functions].findall(program):
            if name:
                ops.append((name, None, None))
            elif other:
                line_ops, errors, unknown = _read_line(other, functions)
                ops.extend(line_ops)
                n_error += errors
                n_unknown += unknown
    return ops, n_error, n_unknown


def read_chunk_calls(
    program: str,
) -> tuple[list[tuple[int, int]], list[tuple[str, str | None]], bool, int, int, int]:
    """A chunk program's calls sorted by kind, as the executor applies them, in one pass: `(intervals,
    normalizations, remove_all, n_calls, n_error_ops, n_unknown_calls)`. `intervals` are the `remove_lines`
    (start, end) and `normalizations` the `normalize` (source, target or None) in program order; `n_calls`
    counts every valid call (`len(parse_program(...).ops)`)."""
    intervals: list[tuple[int, int]] = []
    normalizations: list[tuple[str, str | None]] = []
    remove_all = False
    n_other = n_error = n_unknown = 0
    for start, end, all_, source, target, noop, other in _LINES[FUNCTIONS_CHUNK].findall(program):
        if start:
            intervals.append((int(start), int(end)))
        elif source:
            normalizations.append((source[1:-1], target[1:-1] if target else None))
        elif all_ or noop:
            remove_all = remove_all or bool(all_)
            n_other += 1
        elif other:
            line_ops, errors, unknown = _read_line(other, FUNCTIONS_CHUNK)
            n_error += errors
            n_unknown += unknown
            for name, a, b in line_ops:
                if name == "normalize":
                    normalizations.append((a, b))
                elif name == "remove_lines" and a is not None:
                    intervals.append((a, b))
                else:
                    remove_all = remove_all or name == "remove_lines"
                    n_other += 1
    n_calls = len(intervals) + len(normalizations) + n_other
    return intervals, normalizations, remove_all, n_calls, n_error, n_unknown


def parse_program_by_line(program: str, functions: frozenset[str]) -> ParsedProgram:
    """`parse_program` without the whole-program pass: every line read on its own (the property tests check
    that the two agree)."""
    ops: list[Op] = []
    n_error = n_unknown = 0
    for raw in program.split("\n"):
        line_ops, errors, unknown = _read_line(raw, functions)
        ops.extend(line_ops)
        n_error += errors
        n_unknown += unknown
    return ParsedProgram(tuple(ops), n_error, n_unknown)


def _read_line(raw: str, functions: frozenset[str]) -> tuple[list[Op], int, int]:
    """One line of a program: skipped (blank, comment), read by the line regex, or by `parse_line`."""
    line = raw.strip()
    if not line or line[0] == "#":
        return [], 0, 0
    m = _FAST[functions].fullmatch(line)
    if m is None:
        return parse_line(line, functions)
    # `lastindex` names the alternative that matched (see `_FAST`), in one attribute read.
    last = m.lastindex
    if last is None:
        return [("remove_lines", None, None)], 0, 0
    if last == 2 and "remove_lines" in functions:
        return [("remove_lines", int(m[1]), int(m[2]))], 0, 0
    if last == 3:
        return [("normalize", m[3], None)], 0, 0
    if last == 4:
        return [("normalize", m[3], m[5])], 0, 0
    return [(m[last], None, None)], 0, 0


def parse_line(line: str, functions: frozenset[str]) -> tuple[list[Op], int, int]:
    """The full (ast) reading of one stripped line: `(ops, n_error_ops, n_unknown_calls)`."""
    parsed = _ast_parse(line)
    if parsed is None:
        op = _reference_normalize(line, functions)
        return ([op], 0, 0) if op else ([], _malformed_cost(line, functions), 0)
    tree, source = parsed
    ops: list[Op] = []
    n_error = n_unknown = 0
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
        name = call.func.id if call is not None and isinstance(call.func, ast.Name) else None
        if name in functions:
            op = _validate(name, call, source)
            if op is None and len(tree.body) == 1:
                # `"a" "b"` or `"a"+"b"`: Python reads an expression, the reference one string holding quotes.
                op = _reference_normalize(line, functions)
            if op is not None:
                ops.append(op)
            elif name not in _NO_OPS:
                n_error += max(1, reference_error_count(line))
        elif call is not None:
            n_unknown += 1
        else:
            n_error += _malformed_cost(ast.get_source_segment(source, stmt) or line, functions)
    return ops, n_error, n_unknown


def _ast_parse(line: str) -> tuple[ast.Module, str] | None:
    """The tree and the source it was read from (`line`, or `line` with leading zeros dropped)."""
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" is a warning about code; this is data
            warnings.simplefilter("ignore")
            return ast.parse(line), line
    except SyntaxError as err:
        # `line_start=003`: the reference reads 3, Python refuses leading zeros.
        if "leading zeros" not in str(err.msg):
            return None
        fixed = _strip_leading_zeros(line)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return (ast.parse(fixed), fixed) if fixed is not None else None
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    except (ValueError, RecursionError, MemoryError):  # NUL bytes, lone surrogates, absurd nesting
        return None


def _strip_leading_zeros(line: str) -> str | None:
    """`line` with every run of adjacent digit tokens (`00`, `3`) merged into one plain decimal literal."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    out, pos, i = [], 0, 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == tokenize.NUMBER and tok.string.isdigit():
            j = i
            while (
                j + 1 < len(tokens)
                and tokens[j + 1].type == tokenize.NUMBER
                and tokens[j + 1].string.isdigit()
                and tokens[j + 1].start == tokens[j].end
            ):
                j += 1
            start, end = tok.start[1], tokens[j].end[1]
            out.append(line[pos:start] + str(int(line[start:end])))
            pos, i = end, j + 1
        else:
            i += 1
    return "".join(out) + line[pos:]


_SIGNATURES = {
    "drop_doc": frozenset(),
    "keep_doc": frozenset(),
    "keep_chunk": frozenset(),
    "untouch_doc": frozenset(),
}


def _validate(name: str, call: ast.Call, line: str) -> Op | None:
    """The `Op` for a call of a known function, or None when it is not a valid keyword call of it."""
    if call.args or any(kw.arg is None for kw in call.keywords):  # positional, *args or **kwargs
        return None
    kwargs = {kw.arg: kw.value for kw in call.keywords}
    if name in _SIGNATURES:
        return (name, None, None) if not kwargs else None
    if name == "remove_lines":
        if set(kwargs) == {"all"}:
            value = kwargs["all"]
            return (name, None, None) if isinstance(value, ast.Constant) and value.value is True else None
        if set(kwargs) != {"line_start", "line_end"}:
            return None
        start, end = _int_literal(kwargs["line_start"], line), _int_literal(kwargs["line_end"], line)
        if start is None or end is None:
            return None
        return (name, start, end)
    # normalize
    if "source_str" not in kwargs or not set(kwargs) <= {"source_str", "target_str"}:
        return None
    source = _str_literal(kwargs["source_str"], line)
    target = _str_literal(kwargs["target_str"], line) if "target_str" in kwargs else None
    if source is None or ("target_str" in kwargs and target is None):
        return None
    return (name, source, target)


def _int_literal(node: ast.expr, line: str) -> int | None:
    """An integer written as a literal, read as the reference reads it: `int()` of its source text."""
    inner = (
        node.operand if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)) else node
    )
    if not (isinstance(inner, ast.Constant) and type(inner.value) is int):
        return None
    try:
        return int(ast.get_source_segment(line, node) or "")
    except ValueError:  # 0x10, 1_0 with odd spacing: the reference cannot read them either
        return None


_STRING_LITERAL = re.compile(r"([uU]?)(\"\"\"|'''|\"|')(.*)\2", re.DOTALL)


def _str_literal(node: ast.expr, line: str) -> str | None:
    """A string literal's text with backslashes kept as written, except escaped quotes (see the module doc)."""
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return None
    segment = ast.get_source_segment(line, node) or ""
    m = _STRING_LITERAL.fullmatch(segment)
    # `"a" "b"`: two literals that Python joins, while the reference reads one string holding quotes.
    if m is None or m[2] in m[3].replace("\\" + m[2][0], ""):
        return node.value if _one_string_token(segment) else None  # r"...": its value is the text as written
    return m[3].replace("\\" + m[2][0], m[2][0])


def _one_string_token(segment: str) -> bool:
    try:
        tokens = tokenize.generate_tokens(io.StringIO(segment).readline)
        return sum(t.type == tokenize.STRING for t in tokens) == 1
    except (tokenize.TokenError, SyntaxError):
        return False


def _reference_normalize(line: str, functions: frozenset[str]) -> Op | None:
    """The reference's reading of a `normalize` line Python cannot read, when it is unambiguous (module doc)."""
    if "normalize" not in functions:
        return None
    m = _REFERENCE_NORMALIZE.fullmatch(line)
    if m is None:
        return None
    # The reference takes the text after `=` and strips every `"` from both ends.
    return ("normalize", m[1].strip('"'), None if m[2] is None else m[3].strip('"'))


def names_known_function(line: str, functions: frozenset[str]) -> bool:
    m = _NAME.match(line)
    return m is not None and m[0] in functions


def _malformed_cost(line: str, functions: frozenset[str]) -> int:
    """Error ops of a line that is not a valid call: 0 unless it names a known function."""
    if not names_known_function(line, functions) or _NAME.match(line)[0] in _NO_OPS:
        return 0
    return max(1, reference_error_count(line))


def reference_error_count(line: str) -> int:
    """How many error ops the reference's string parser counts for `line` on its own (no range errors)."""
    if line.startswith("remove_lines"):
        if "all=True" in line:
            return 0
        return _reference_arg_errors(line, _remove_lines_parses)
    if line.startswith("normalize"):
        return _reference_arg_errors(line, _normalize_parses)
    return 0


def _reference_arg_errors(line: str, parses) -> int:
    open_at = line.find("(")
    if open_at < 0:
        return 1
    close_at = line.find(")")
    errors = 0
    if close_at < 0:
        errors, close_at = 1, -1  # the reference then slices to [-1], dropping the last character
    return errors + (0 if parses(line[open_at + 1 : close_at].split(",")) else 1)


def _remove_lines_parses(params: list[str]) -> bool:
    try:
        int(params[0].split("=")[1])
        int(params[1].split("=")[1])
    except (IndexError, ValueError):
        return False
    return True


def _normalize_parses(params: list[str]) -> bool:
    if len(params) > 2:
        return True  # the reference silently does nothing with three or more arguments
    return all("=" in p for p in params)
