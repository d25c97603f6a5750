"""Incremental recognition of plan steps in a model's token stream.

:class:`PlanStreamParser` is a single-pass structural scanner (a container stack plus
string/escape state) over text fed chunk by chunk. It reports each step of
``{"steps": [{...}, ...]}`` (or of a bare ``[{...}, ...]``) the moment the step's
object closes, exactly once, and never a step that is still open: a partial parse cannot
tell that an element is finished, a closing brace can.

It is O(total length) and never goes back over an earlier piece. It also avoids Python
work per character: pieces wait unscanned until enough closing brackets have arrived for
a step to possibly close; escape pairs are blanked with ``str.replace`` so that every
remaining quote delimits a string; and regular expressions skip strings and balanced
brackets (whole steps, when a piece holds them), so Python code runs only at the
brackets that change the depth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["ParseOutcome", "PlanStreamParser"]

# scanner modes
_PRELUDE = 0  # before the top-level value: prose or a ``` fence
_TOP = 1  # directly inside the top-level object (keys, separators)
_ARRAY = 2  # directly inside the steps array (elements and separators)
_NESTED = 3  # inside a step or inside another key's value: only brackets matter
_NESTED_STRING = 4  # inside a string of _NESTED text that began in an earlier piece
_TOP_STRING = 5  # inside a string of the top object that began in an earlier piece
_DONE = 6  # the top-level value closed; what follows may only close it off (see _TAIL)
_ERROR = 7  # the document cannot be a plan

#: a closing-bracket count that is never reached (nothing is scanned once done)
_NEVER = 1 << 62

# steps-array sub-states
_FIRST = 0  # just after '[': an element or ']'
_ELEM = 1  # just after ',': an element
_SEP = 2  # just after an element: ',' or ']'

#: the start of the top-level value
_VALUE_START = re.compile(r"[{\[]")
#: the next token that matters directly inside the top object
_TOP_TOKEN = re.compile(r'["{}\[\],:]')
#: the next non-whitespace character (JSON whitespace only)
_NON_WS = re.compile(r"[^ \t\r\n]")
#: a run of whitespace in the text after the value
_TAIL_WS = re.compile(r"\s+")
#: the text allowed after the value (whitespace runs as one space), indexed by whether the
#: value began inside a ``` fence: whitespace, and then the closing ``` (or the start of
#: it, where a length limit cut the reply)
_TAIL = (re.compile(r" ?"), re.compile(r" ?(?:`{1,2}|``` ?)?"))
# The patterns below run on text whose escape pairs (\\\\ and \\") were blanked, so a
# string is simply "[^"]*".


def _balanced(levels: int) -> str:
    """A pattern for text with brackets balanced up to ``levels`` deep (strings skipped)."""
    inner = r'(?:[^"{}\[\]]++|"[^"]*+")*+'
    for _ in range(levels):
        inner = r'(?:[^"{}\[\]]++|"[^"]*+"|\{' + inner + r"\}|\[" + inner + r"\])*+"
    return inner


#: text whose brackets balance (up to 3 levels), strings included: what lies between the
#: brackets that change the depth; stops at a closing bracket, at an opening bracket that
#: does not close in this piece (or nests deeper), or at a string that goes on
_SKIP = re.compile(_balanced(3))
#: the rest of a string that began in an earlier piece, then what _SKIP skips
_STRING_END_SKIP = re.compile(r'[^"]*+"' + _balanced(3))
#: a whole step (nested up to 6 levels) and the separator after it: one regex call per
#: step when a piece holds whole steps; deeper or unfinished steps take the bracket loop
_STEP = re.compile(r"[ \t\r\n]*+(\{" + _balanced(6) + r"\})[ \t\r\n]*+(,?)")
_OPENER = {"}": "{", "]": "["}


@dataclass(frozen=True, slots=True)
class ParseOutcome:
    """What the whole text amounted to, decided at the end of the stream.

    ``status`` is ``"complete"`` (the top-level value closed and strict-parses),
    ``"truncated"`` (a value began but did not close), ``"empty"`` (no JSON value began)
    or ``"invalid"`` (the text is not a plan; ``message`` says why).
    ``steps`` holds the parsed steps when complete; ``emitted`` counts steps reported.
    """

    status: Literal["complete", "truncated", "empty", "invalid"]
    message: str | None = None
    steps: list[Any] | None = None
    emitted: int = 0

    @property
    def complete(self) -> bool:
        return self.status == "complete"


class PlanStreamParser:
    """Find plan steps in streamed text as their JSON objects close.

    Accepted shapes: ``{"steps": [ {...}, ... ]}`` (other keys of the top object are
    skipped, before or after ``"steps"``) and a bare ``[ {...}, ... ]``. Text before the
    value (prose, a ```json fence) is ignored; it must not contain ``{`` or ``[``. A reply
    is one plan: after the value only whitespace may follow, and the closing ``` when
    the value began inside a ``` fence. Anything else (a second plan, prose) makes the
    text invalid, as soon as it arrives.

    >>> p = PlanStreamParser()
    >>> p.feed('{"steps": [{"capability": "a", "para')
    []
    >>> p.feed('ms": {}}, ')
    [(0, '{"capability": "a", "params": {}}')]
    """

    __slots__ = (
        "_arr",
        "_chunks",
        "_emitted",
        "_error",
        "_escape",
        "_fenced",
        "_key",
        "_key_expected",
        "_mark",
        "_mode",
        "_need",
        "_pending",
        "_quote_needed",
        "_scanned",
        "_stack",
        "_start",
        "_step_len",
        "_steps_depth",
        "_steps_seen",
        "_tail",
        "_value_end",
    )

    def __init__(self) -> None:
        #: the pieces fed; pieces not scanned yet are joined into one when scanned
        self._chunks: list[str] = []
        self._scanned = 0
        #: closing brackets in the unscanned pieces, and how many it takes to close a step
        self._pending = 0
        self._need = 1
        self._quote_needed = False
        self._mode = _PRELUDE
        self._stack: list[str] = []
        #: depth (stack length) of the open steps array, -1 when none is open
        self._steps_depth = -1
        self._steps_seen = False
        self._arr = _FIRST
        self._emitted = 0
        #: length of the last step: a piece shorter than that is unlikely to hold a whole one
        self._step_len = 0
        #: top object: whether the next string is a key, and the last key read
        self._key_expected = False
        self._key: str | None = None
        #: the scanned text ends inside a string, right after a backslash
        self._escape = False
        #: (piece index, offset) where the top-level value starts, and where the open step
        #: (or the open key of the top object) starts
        self._start: tuple[int, int] = (0, 0)
        self._mark: tuple[int, int] = (0, 0)
        #: (piece index, offset) just past the top-level value once it closed
        self._value_end: tuple[int, int] | None = None
        #: the value began inside a ``` fence (an odd number of ``` before it)
        self._fenced = False
        #: the text after the value so far, whitespace runs as one space
        self._tail = ""
        self._error: str | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """All text fed so far."""
        return "".join(self._chunks)

    @property
    def emitted(self) -> int:
        """How many steps have been reported."""
        return self._emitted

    @property
    def error(self) -> str | None:
        """Why the text cannot be a plan, as soon as the scanner knows."""
        return self._error

    def feed(self, text: str) -> list[tuple[int, str]]:
        """Take ``text``, the next piece of the stream.

        Returns:
            ``(index, raw JSON)`` of each step whose object closed in this piece, in order.
        """
        if not text:
            return []
        self._chunks.append(text)
        if self._mode == _DONE:
            self._mode = self._after_value(text)
            return []
        # Scanning can wait until a step could have closed: inside a string, not before
        # a quote arrives; then not before enough closing brackets have arrived to bring
        # the depth back to the steps array.
        if self._quote_needed:
            if '"' not in text:
                return []
            self._quote_needed = False
        if "}" in text or "]" in text:
            closers = self._pending + text.count("}") + text.count("]")
            if closers >= self._need:
                return self._scan()
            self._pending = closers
        return []

    def _scan(self) -> list[tuple[int, str]]:
        """Scan the pieces not scanned yet (joined into one), once."""
        chunks = self._chunks
        ci = self._scanned
        if len(chunks) > ci + 1:
            chunks[ci:] = ["".join(chunks[ci:])]
        self._scanned = ci + 1
        text = chunks[ci]
        n = len(text)
        # Blank escape pairs so that every '"' left is a string delimiter (same offsets).
        if "\\" in text:
            if self._escape:
                text = "\0" + text[1:].replace("\\\\", "\0\0").replace('\\"', "\0\0")
            else:
                text = text.replace("\\\\", "\0\0").replace('\\"', "\0\0")
        elif self._escape:
            text = "\0" + text[1:]
        self._escape = False
        out: list[tuple[int, str]] = []
        stack = self._stack
        mode = self._mode
        pos = 0
        while pos < n:
            if mode == _NESTED:
                pos = _SKIP.match(text, pos).end()  # type: ignore[union-attr]
                if pos == n:
                    break
                c = text[pos]
                pos += 1
                if c == '"':  # a string that does not end in this piece
                    mode = _NESTED_STRING
                    break
                if c == "{" or c == "[":
                    stack.append(c)
                    continue
                if stack.pop() != _OPENER[c]:
                    mode = self._fail(f"mismatched {c!r} at offset {self._offset(ci, pos - 1)}")
                    break
                depth = len(stack)
                if depth == self._steps_depth:
                    raw = self._slice(self._mark, ci, pos)
                    self._step_len = len(raw)
                    out.append((self._emitted, raw))
                    self._emitted += 1
                    self._arr = _SEP
                    mode = _ARRAY
                elif depth == 1:  # back in the top object, after a value
                    self._key_expected = False
                    mode = _TOP
            elif mode == _NESTED_STRING:
                m = _STRING_END_SKIP.match(text, pos)
                if m is None:  # the string goes on
                    break
                pos = m.end()
                mode = _NESTED
            elif mode == _ARRAY:
                # try a whole step at once where one may fit (a failed try costs a scan)
                if self._arr != _SEP and n - pos >= self._step_len:
                    m = _STEP.match(text, pos)
                    if m is not None:
                        start, end = m.span(1)
                        self._step_len = end - start
                        out.append((self._emitted, chunks[ci][start:end]))
                        self._emitted += 1
                        self._arr = _ELEM if m.end() > m.start(2) else _SEP
                        pos = m.end()
                        continue
                m = _NON_WS.search(text, pos)
                if m is None:
                    break
                pos = m.start()
                c = text[pos]
                arr = self._arr
                if c == "{" and arr != _SEP:
                    stack.append(c)
                    self._mark = (ci, pos)
                    pos += 1
                    mode = _NESTED
                elif c == "," and arr == _SEP:
                    self._arr = _ELEM
                    pos += 1
                elif c == "]" and arr != _ELEM:
                    stack.pop()
                    self._steps_depth = -1
                    pos += 1
                    if stack:
                        self._key_expected = False
                        mode = _TOP
                    else:
                        self._value_end = (ci, pos)
                        mode = _DONE
                        break
                else:
                    if arr == _SEP:
                        msg = f"expected ',' or ']' after step {self._emitted - 1}, got {c!r}"
                    else:
                        msg = f"step {self._emitted} is not a JSON object (it starts with {c!r})"
                    mode = self._fail(msg)
                    break
            elif mode == _TOP:
                m = _TOP_TOKEN.search(text, pos)
                if m is None:
                    break
                pos = m.start()
                c = text[pos]
                if c == '"':
                    if self._key_expected:
                        self._mark = (ci, pos)
                    mode = _TOP_STRING
                    pos += 1
                elif c == ":":
                    self._key_expected = False
                    pos += 1
                elif c == ",":
                    self._key_expected = True
                    self._key = None
                    pos += 1
                elif c == "[" or c == "{":
                    stack.append(c)
                    pos += 1
                    if c == "[" and self._key == "steps" and not self._key_expected:
                        if self._steps_seen:
                            mode = self._fail('the top object has more than one "steps" key')
                            break
                        self._steps_seen = True
                        self._steps_depth = len(stack)
                        self._arr = _FIRST
                        mode = _ARRAY
                    else:
                        mode = _NESTED
                elif c == "}":
                    stack.pop()
                    pos += 1
                    self._value_end = (ci, pos)
                    mode = _DONE
                    break
                else:
                    where = self._offset(ci, pos)
                    mode = self._fail(f"unexpected ']' in the top object at offset {where}")
                    break
            elif mode == _TOP_STRING:
                pos = text.find('"', pos) + 1
                if pos == 0:
                    break
                if self._key_expected:
                    self._key = _decode_key(self._slice(self._mark, ci, pos))
                mode = _TOP
            else:  # _PRELUDE
                m = _VALUE_START.search(text, pos)
                if m is None:
                    break
                pos = m.start()
                c = text[pos]
                self._start = (ci, pos)
                self._fenced = self._slice((0, 0), ci, pos).count("```") % 2 == 1
                stack.append(c)
                pos += 1
                if c == "{":
                    self._key_expected = True
                    mode = _TOP
                else:
                    self._steps_seen = True
                    self._steps_depth = 1
                    self._arr = _FIRST
                    mode = _ARRAY
        if mode == _DONE:  # the value closed at ``pos``: judge what follows it
            mode = self._after_value(chunks[ci][pos:])
        if mode in (_NESTED_STRING, _TOP_STRING) and text[-1] == "\\":
            self._escape = True  # a lone backslash: the next piece starts escaped
        self._mode = mode
        self._pending = 0
        if mode == _NESTED_STRING:
            self._quote_needed = True
        if mode in (_NESTED, _NESTED_STRING):
            self._need = len(stack) - max(self._steps_depth, 0)
        else:
            self._need = _NEVER if mode >= _DONE else 1
        return out

    def _slice(self, start: tuple[int, int], end_chunk: int, end: int) -> str:
        """Text from ``start`` to offset ``end`` (exclusive) of piece ``end_chunk``."""
        ci, off = start
        chunks = self._chunks
        if ci == end_chunk:
            return chunks[ci][off:end]
        return "".join([chunks[ci][off:], *chunks[ci + 1 : end_chunk], chunks[end_chunk][:end]])

    def _after_value(self, text: str) -> int:
        """Take ``text`` following the closed value: the mode it leaves (_DONE or _ERROR)."""
        if not text:
            return _DONE
        tail = self._tail + _TAIL_WS.sub(" ", text)
        tail = tail.replace("  ", " ")  # a run split across pieces
        if _TAIL[self._fenced].fullmatch(tail) is None:
            return self._fail(_after_message(tail))
        self._tail = tail
        return _DONE

    def _fail(self, message: str) -> int:
        self._error = message
        self._mode = _ERROR
        return _ERROR

    def _offset(self, ci: int, pos: int) -> int:
        return sum(len(c) for c in self._chunks[:ci]) + pos

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> ParseOutcome:
        """Judge the whole text once the stream has ended.

        The top-level value is strict-parsed with orjson to confirm it is well formed and
        has the shape of a plan; an unfinished value is ``"truncated"``.
        """
        if self._scanned < len(self._chunks) and self._mode < _DONE:
            self._quote_needed = False
            self._scan()  # cannot close a step: the unscanned text has no '}'
        emitted = self._emitted
        if self._mode == _ERROR:
            return ParseOutcome("invalid", self._error, emitted=emitted)
        if self._mode == _PRELUDE:
            return ParseOutcome("empty", "the output contains no JSON value", emitted=emitted)
        if self._value_end is None:
            open_what = "step" if len(self._stack) > self._steps_depth > 0 else "plan"
            return ParseOutcome(
                "truncated",
                f"the output ended inside the {open_what} after {emitted} complete step(s)",
                emitted=emitted,
            )
        raw = self._slice(self._start, *self._value_end)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return ParseOutcome("invalid", f"malformed JSON: {exc}", emitted=emitted)
        steps = value.get("steps") if isinstance(value, dict) else value
        if isinstance(value, dict) and "steps" not in value:
            return ParseOutcome("invalid", 'the JSON object has no "steps" key', emitted=emitted)
        if not isinstance(steps, list):
            kind = type(steps).__name__
            return ParseOutcome("invalid", f'"steps" must be an array, not {kind}', emitted=emitted)
        if len(steps) != emitted:  # cannot happen for text the scanner accepted
            return ParseOutcome(
                "invalid", f"found {len(steps)} steps but recognised {emitted}", emitted=emitted
            )
        return ParseOutcome("complete", None, steps=steps, emitted=emitted)


def _after_message(tail: str) -> str:
    snippet = tail.strip()
    if len(snippet) > 60:
        snippet = snippet[:60] + "..."
    return f"a reply holds one plan, but text follows it: {snippet!r}"


def _decode_key(raw: str) -> str | None:
    """The value of a JSON string token (None when it is not a valid string)."""
    if "\\" not in raw:
        return raw[1:-1]
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) else None
