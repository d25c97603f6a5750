"""PlanStreamParser: steps recognised as their objects close, once, never partially."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaizen_async._plan_parser import ParseOutcome, PlanStreamParser

STEP_A = {"capability": "reverse", "params": {"key": "text"}}
STEP_B = {"capability": "uppercase", "params": {"key": "text"}}
TRICKY = {
    "capability": "write",
    "params": {
        "s": 'quote " brace { } bracket [ ] backslash \\ both \\" end \\\\',
        "emoji": "🚀 café 世界 \u2028",
        "nested": {"a": [1, -2.5e-3, {"b": [[], {}]}], "t": True, "n": None},
    },
}


def feed_all(pieces: list[str]) -> tuple[list[tuple[int, str]], ParseOutcome]:
    parser = PlanStreamParser()
    out: list[tuple[int, str]] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    return out, parser.finish()


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def steps_of(out: list[tuple[int, str]]) -> list[Any]:
    return [json.loads(raw) for _, raw in out]


# -- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_steps_object_in_any_pieces(size: int) -> None:
    text = json.dumps({"steps": [STEP_A, TRICKY, STEP_B]})
    out, outcome = feed_all(split_every(text, size))
    assert [i for i, _ in out] == [0, 1, 2]
    assert steps_of(out) == [STEP_A, TRICKY, STEP_B]
    assert outcome.complete
    assert outcome.steps == [STEP_A, TRICKY, STEP_B]
    assert outcome.emitted == 3


def test_raw_text_is_the_exact_slice() -> None:
    step = '{ "capability" : "reverse" ,\n  "params" : { "key" : "te\\"xt" } }'
    out, outcome = feed_all([f'{{"steps": [ {step} ,{step}]}}'])
    assert out == [(0, step), (1, step)]
    assert outcome.complete


def test_bare_array() -> None:
    text = json.dumps([STEP_A, STEP_B], indent=2)
    for size in (1, 5, 1000):
        out, outcome = feed_all(split_every(text, size))
        assert steps_of(out) == [STEP_A, STEP_B]
        assert outcome.complete
        assert outcome.steps == [STEP_A, STEP_B]


@pytest.mark.parametrize("text", ['{"steps": []}', "[]", '{"steps":[ \n ]}', " [ ] "])
def test_empty_plan(text: str) -> None:
    out, outcome = feed_all(list(text))
    assert out == []
    assert outcome.complete
    assert outcome.steps == []


def test_other_keys_before_and_after_steps_are_skipped() -> None:
    doc = (
        '{"reasoning": "first {reverse}, then [upper] \\"steps\\": [",'
        ' "meta": {"steps": [{"capability": "decoy"}], "list": [[{}], "]"]},'
        ' "n": 3, "ok": true, "none": null,'
        f' "steps": [{json.dumps(STEP_A)}, {json.dumps(STEP_B)}],'
        ' "after": {"steps": [{"capability": "decoy"}]}, "z": [1, {"x": "}"}]}'
    )
    for size in (1, 3, 11, 1000):
        out, outcome = feed_all(split_every(doc, size))
        assert steps_of(out) == [STEP_A, STEP_B], size
        assert outcome.complete


def test_escaped_steps_key_is_recognised() -> None:
    doc = '{"st\\u0065ps": [' + json.dumps(STEP_A) + "]}"
    for size in (1, 4, 100):
        out, outcome = feed_all(split_every(doc, size))
        assert steps_of(out) == [STEP_A]
        assert outcome.complete


def test_a_key_that_only_contains_steps_is_not_the_steps_key() -> None:
    doc = '{"my_steps": [' + json.dumps(STEP_A) + '], "steps": []}'
    out, outcome = feed_all([doc])
    assert out == []
    assert outcome.complete


# -- text around the value ----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 4, 1000])
@pytest.mark.parametrize("tail", ["", "\n```", "\n```\n", "```", " \n\n ``` \n", "\n``"])
def test_prose_and_fence_before_the_value_a_closing_fence_after(size: int, tail: str) -> None:
    text = 'Sure! Here is the "plan":\n```json\n' + json.dumps({"steps": [STEP_A]}, indent=2)
    out, outcome = feed_all(split_every(text + tail, size))
    assert steps_of(out) == [STEP_A]
    assert outcome.complete, outcome


@pytest.mark.parametrize("size", [1, 4, 1000])
@pytest.mark.parametrize(
    ("before", "tail"),
    [
        ("```json\n", "\n```\nLet me know {if} you need [more]."),  # prose after the fence
        ("", "\nLet me know if you need more."),
        ("", "\n```"),  # a closing fence that nothing opened
        ("```json\n", "\n````"),
        ("```json\n", "\n`` `"),
        ("```json\n", "\n```\n```"),
        ("", '\n{"steps": []}'),  # a second plan
        ("", "[]"),  # two arrays in one reply, as the original Kaizen refused them
        ("```\n", "\n```\n```json\n{}\n```"),
        ("", "."),
    ],
)
def test_a_reply_holds_one_plan(size: int, before: str, tail: str) -> None:
    text = before + json.dumps([STEP_A, STEP_B]) + tail
    parser = PlanStreamParser()
    out: list[tuple[int, str]] = []
    for piece in split_every(text, size):
        out.extend(parser.feed(piece))
    assert steps_of(out) == [STEP_A, STEP_B]  # the steps were emitted as they closed
    assert parser.error is not None and "text follows it" in parser.error
    outcome = parser.finish()
    assert outcome.status == "invalid"
    assert outcome.message == parser.error
    assert outcome.emitted == 2


def test_the_text_after_the_plan_is_judged_as_soon_as_it_arrives() -> None:
    parser = PlanStreamParser()
    assert len(parser.feed('```json\n{"steps": [' + json.dumps(STEP_A) + "]}")) == 1
    assert parser.feed("\n ") == [] and parser.error is None
    assert parser.feed("``") == [] and parser.error is None
    assert parser.feed("`\n") == [] and parser.error is None
    assert parser.feed("\nThanks!") == []
    assert parser.error == "a reply holds one plan, but text follows it: '``` Thanks!'"


def test_nothing_is_emitted_after_the_value_closed() -> None:
    parser = PlanStreamParser()
    assert len(parser.feed("[" + json.dumps(STEP_A) + "]")) == 1
    assert parser.feed(', {"capability": "x", "params": {}}]') == []
    assert parser.feed('{"steps": [' + json.dumps(STEP_B) + "]}") == []
    assert parser.finish().status == "invalid"
    assert parser.finish().status == "invalid"  # finish is repeatable


def test_text_is_everything_fed() -> None:
    parser = PlanStreamParser()
    pieces = ["pro", "se {", '"steps": [', "", "]}", " tail"]
    for piece in pieces:
        parser.feed(piece)
    assert parser.text == "".join(pieces)


# -- strings, escapes and characters --------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        '\\"',
        "\\\\",
        '\\\\"',
        "}",
        "]",
        "{[",
        '"}{"',
        "🚀",
        "👩‍👩‍👧",
        "\u00e9\u0301",
        "\n\t",
        "\\",
        "a\\\\\\\\b",
    ],
)
def test_strings_split_everywhere(value: str) -> None:
    step = {"capability": "c", "params": {"v": value, value: [value, {"k": value}]}}
    for ensure_ascii in (False, True):
        text = json.dumps({"steps": [step, step]}, ensure_ascii=ensure_ascii)
        for cut in range(1, len(text)):
            out, outcome = feed_all([text[:cut], text[cut:]])
            assert steps_of(out) == [step, step], (text, cut)
            assert outcome.complete
        out, outcome = feed_all(list(text))
        assert steps_of(out) == [step, step]


def test_backslash_runs_at_piece_ends() -> None:
    for run in range(1, 7):
        value = "\\" * run
        step = {"capability": "c", "params": {"v": value + '"' + value}}
        text = json.dumps([step])
        for size in (1, 2, 3):
            out, outcome = feed_all(split_every(text, size))
            assert steps_of(out) == [step]
            assert outcome.complete


def test_whitespace_runs() -> None:
    ws = " \n\t\r\n  \n"
    body = f"{ws}{json.dumps(STEP_A)}{ws},{ws}{json.dumps(STEP_B)}{ws}"
    text = f'{ws}{{{ws}"steps"{ws}:{ws}[{body}]{ws}}}{ws}'
    for size in (1, 2, 5, 1000):
        out, outcome = feed_all(split_every(text, size))
        assert steps_of(out) == [STEP_A, STEP_B]
        assert outcome.complete


def test_deep_nesting_beyond_the_fast_paths() -> None:
    deep: Any = "bottom }]"
    for i in range(12):
        deep = [deep, {"level": i, "x": deep if i < 3 else None}]
    step = {"capability": "deep", "params": {"d": deep}}
    text = json.dumps({"steps": [step, STEP_A, step]})
    for size in (1, 9, 100, len(text)):
        out, outcome = feed_all(split_every(text, size))
        assert steps_of(out) == [step, STEP_A, step]
        assert outcome.complete


# -- exactly once, the moment it closes ------------------------------------------------------


def test_each_step_is_emitted_when_its_brace_arrives() -> None:
    steps = [STEP_A, TRICKY, STEP_B]
    text = json.dumps({"steps": steps})
    parser = PlanStreamParser()
    seen: list[tuple[int, str]] = []
    for end, ch in enumerate(text, start=1):
        new = parser.feed(ch)
        for index, raw in new:
            assert text[:end].endswith(raw)  # emitted exactly at its closing brace
            assert json.loads(raw) == steps[index]
        seen.extend(new)
    assert [i for i, _ in seen] == [0, 1, 2]


def test_no_prefix_emits_the_open_step() -> None:
    steps = [STEP_A, TRICKY, STEP_B]
    text = "```json\n" + json.dumps({"note": "x", "steps": steps}, indent=1) + "\n```"
    full, _ = feed_all([text])
    ends = [text.index(raw) + len(raw) for _, raw in full]
    value_start = text.index("{")
    value_end = text.rindex("}") + 1
    for cut in range(len(text) + 1):
        for pieces in ([text[:cut]], split_every(text[:cut], 3)):
            out, outcome = feed_all(pieces)
            assert out == full[: sum(end <= cut for end in ends)], cut
            if cut <= value_start:
                assert outcome.status == "empty"
            elif cut < value_end:
                assert outcome.status == "truncated", cut
                assert outcome.message
            else:
                assert outcome.complete


def test_truncated_message_says_where() -> None:
    parser = PlanStreamParser()
    parser.feed('{"steps": [' + json.dumps(STEP_A) + ', {"capability": "upp')
    outcome = parser.finish()
    assert outcome.status == "truncated"
    assert outcome.emitted == 1
    assert "inside the step" in (outcome.message or "")


# -- malformed documents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"steps": ["reverse"]}', "not a JSON object"),
        ('{"steps": [1, 2]}', "not a JSON object"),
        ('{"steps": [[{"capability": "a"}]]}', "not a JSON object"),
        ("[null]", "not a JSON object"),
        ('{"steps": [{"capability": "a", "params": {}} {"capability": "b"}]}', "expected ','"),
        ('{"steps": [{"capability": "a", "params": {}},]}', "not a JSON object"),
        ('{"steps": [,]}', "not a JSON object"),
        ('{"steps": [{"capability": "a", "params": {]}]}', "mismatched"),
        ('{"steps": [{"capability": "a"]]}', "mismatched"),
        ('{"a": ]', "unexpected"),
        ('{"steps": [], "steps": []}', "more than one"),
        ('{"plan": []}', 'no "steps"'),
        ('{"steps": {"capability": "a"}}', "must be an array"),
        ('{"steps": "none"}', "must be an array"),
        ('{"steps" [] }', "malformed"),
        ('{"steps": [], "x": tru}', "malformed"),
        ('{"steps": [{"capability": "a", "params": {"n": 01}}]}', "malformed"),
    ],
)
def test_malformed_documents_are_invalid(text: str, fragment: str) -> None:
    for pieces in ([text], list(text)):
        _, outcome = feed_all(pieces)
        assert outcome.status == "invalid", (text, outcome)
        assert fragment in (outcome.message or ""), outcome.message


def test_after_an_error_nothing_more_is_emitted() -> None:
    parser = PlanStreamParser()
    assert len(parser.feed('{"steps": [' + json.dumps(STEP_A) + ", 7, ")) == 1
    assert parser.error is not None
    assert parser.feed(json.dumps(STEP_B) + "]}") == []
    assert parser.finish().status == "invalid"


@pytest.mark.parametrize("text", ["", "   ", "none", "No steps apply.", '"steps"'])
def test_no_json_value_is_empty(text: str) -> None:
    out, outcome = feed_all([text])
    assert out == []
    assert outcome.status == "empty"
    assert not outcome.complete


def test_empty_pieces_are_ignored() -> None:
    out, outcome = feed_all(["", "[", "", json.dumps(STEP_A), "", "]", ""])
    assert steps_of(out) == [STEP_A]
    assert outcome.complete


# -- properties --------------------------------------------------------------------------------

_TRICKY_CHARS = st.sampled_from(
    ['"', "\\", "{", "}", "[", "]", ",", ":", "🚀", "é", "\n", " ", "\t"]
)
_TEXT = st.text(st.one_of(_TRICKY_CHARS, st.characters(codec="utf-8")), max_size=12)
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=8,
)
_STEP = st.fixed_dictionaries(
    {"capability": _TEXT, "params": st.dictionaries(_TEXT, _JSON, max_size=4)},
    optional={"note": _JSON},
)
_WS = st.text(st.sampled_from([" ", "\n", "\t", "\r"]), max_size=3)
#: other keys of the top object (a bare array when None)
_OTHER_KEYS = st.dictionaries(_TEXT.filter(lambda k: k != "steps"), _JSON, max_size=2)
_PREFIXES = ["", "```json\n", 'Here is the "plan":\n```json\n', "Plan: \\ ok\n"]
#: what may follow the value, by whether the prefix opened a fence
_SUFFIXES = {False: ["", "\n", " \t\r\n "], True: ["", "\n```", "```\n", "\n", " \n```\n\n"]}


def _dump(value: Any, style: int) -> str:
    if style == 0:
        return orjson.dumps(value).decode()
    if style == 1:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    return json.dumps(value, ensure_ascii=True, indent=style - 2 or None)


@dataclass
class Doc:
    text: str
    steps: list[Any]
    raws: list[str]
    ends: list[int]  # offset just past each step's closing brace
    value_start: int
    value_end: int


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    """A plan document built piece by piece, so every step's offsets are known."""
    steps = draw(st.lists(_STEP, max_size=6))
    style = draw(st.integers(0, 4))
    prefix = draw(st.sampled_from(_PREFIXES))
    suffix = draw(st.sampled_from(_SUFFIXES["```" in prefix]))
    others = draw(st.none() | st.tuples(_OTHER_KEYS, _OTHER_KEYS))
    spaces = draw(st.lists(_WS, min_size=1, max_size=4))
    turn = iter(range(10**6))

    def ws() -> str:
        return spaces[next(turn) % len(spaces)]

    parts: list[str] = [prefix]
    value_start = len(prefix)
    if others is not None:
        parts.append("{" + ws())
        for key, value in others[0].items():
            parts.append(f"{_dump(key, style)}:{ws()}{_dump(value, style)},{ws()}")
        parts.append('"steps"' + ws() + ":" + ws())
    parts.append("[" + ws())
    raws: list[str] = []
    ends: list[int] = []
    for i, step in enumerate(steps):
        if i:
            parts.append(ws() + "," + ws())
        raw = _dump(step, style)
        parts.append(raw)
        raws.append(raw)
        ends.append(sum(map(len, parts)))
    parts.append(ws() + "]")
    if others is not None:
        for key, value in others[1].items():
            parts.append(f",{ws()}{_dump(key, style)}:{_dump(value, style)}")
        parts.append(ws() + "}")
    value_end = sum(map(len, parts))
    parts.append(suffix)
    return Doc("".join(parts), steps, raws, ends, value_start, value_end)


@st.composite
def cut_points(draw: st.DrawFn, length: int) -> list[int]:
    return sorted(set(draw(st.lists(st.integers(0, length), max_size=40))))


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(data=st.data())
def test_property_streamed_steps_equal_whole_text_steps(data: st.DataObject) -> None:
    doc = data.draw(documents())
    cuts = data.draw(cut_points(len(doc.text)))
    parser = PlanStreamParser()
    emitted: list[tuple[int, str]] = []
    fed = 0
    for piece in _pieces(doc.text, cuts):
        emitted.extend(parser.feed(piece))
        fed += len(piece)
        # exactly the steps whose closing brace has arrived: no later, never partial
        assert len(emitted) == sum(end <= fed for end in doc.ends)
    assert emitted == list(enumerate(doc.raws))
    assert [orjson.loads(raw) for _, raw in emitted] == doc.steps
    outcome = parser.finish()
    assert outcome.complete, outcome
    assert outcome.steps == doc.steps
    whole = orjson.loads(doc.text[doc.value_start : doc.value_end])
    assert (whole if isinstance(whole, list) else whole["steps"]) == doc.steps


@_SETTINGS
@given(data=st.data())
def test_property_prefixes_emit_only_complete_steps(data: st.DataObject) -> None:
    doc = data.draw(documents())
    rng = data.draw(st.randoms(use_true_random=False))
    for cut in [*rng.sample(range(len(doc.text) + 1), min(8, len(doc.text) + 1)), len(doc.text)]:
        prefix = doc.text[:cut]
        cuts = sorted(rng.sample(range(cut + 1), min(rng.randint(0, 12), cut + 1)))
        out, outcome = feed_all(_pieces(prefix, cuts))
        done = sum(end <= cut for end in doc.ends)
        assert out == list(enumerate(doc.raws[:done])), cut
        if cut >= doc.value_end:
            assert outcome.complete
        elif cut <= doc.value_start:
            assert outcome.status == "empty"
        else:
            assert outcome.status == "truncated", (cut, outcome)
            assert outcome.emitted == done
