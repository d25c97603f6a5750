"""What the converter and the fixer ask the model, and how the Go file is taken out of the
answer. The prompts hold no paths, times or other run-specific text, so the same job asks
the same questions every time (a recorded run replays exactly)."""

from __future__ import annotations

import re

__all__ = [
    "SYSTEM",
    "convert_prompt",
    "extract_go",
    "fix_prompt",
    "prompt_field",
]

SYSTEM = (
    "You translate Python code to idiomatic Go. Reply with exactly one complete Go source "
    "file in a single ```go fenced block, and nothing else."
)

#: longest piece of another file quoted in a prompt (characters)
_QUOTE_LIMIT = 12_000


def _rules(package: str, test: bool) -> str:
    rules = [
        f"- The file starts with `package {package}`. Every file of the Python package is in "
        "this one Go package: use its names directly and never import it.",
        "- Go standard library only; no third-party modules.",
        "- Python names become Go names: exported ones in CamelCase (`parse_money` -> "
        "`ParseMoney`), classes become structs with methods and a `NewX` constructor where "
        "state needs setting up, exceptions become error types, and a function that raises "
        "returns an `error` as its last result.",
        "- Keep the behaviour and the messages exactly.",
    ]
    if test:
        rules.append(
            "- This is a test file: write Go tests with the `testing` package, in the same "
            "package, and name each test `Test<File><Case>` so names stay unique in the package."
        )
    return "\n".join(rules)


def _quote(name: str, text: str) -> str:
    if len(text) > _QUOTE_LIMIT:
        text = text[:_QUOTE_LIMIT] + "\n// ... (cut)"
    return f"// {name}\n{text.rstrip()}\n"


def _deps_block(deps: dict[str, str]) -> str:
    if not deps:
        return ""
    quoted = "\n".join(_quote(name, text) for name, text in sorted(deps.items()))
    return f"Go code already written for the files it uses:\n```go\n{quoted}```\n\n"


def convert_prompt(
    *, py_name: str, go_name: str, package: str, python: str, test: bool, deps: dict[str, str]
) -> str:
    """The request to convert one Python file; ``deps`` maps Go file names to their code."""
    return (
        "Convert this Python file to Go.\n\n"
        f"Python file: {py_name}\n"
        f"Go file: {go_name}\n"
        f"Go package: {package}\n\n"
        f"Rules:\n{_rules(package, test)}\n\n"
        f"{_deps_block(deps)}"
        f"Python source ({py_name}):\n```python\n{python.rstrip()}\n```\n"
    )


def fix_prompt(
    *,
    go_name: str,
    py_name: str,
    package: str,
    go: str,
    python: str,
    errors: list[str],
    test: bool,
    deps: dict[str, str],
) -> str:
    """The request to rewrite one Go file the toolchain blamed."""
    listed = "\n".join(errors)
    return (
        "This Go file, converted from the Python file below, fails the Go toolchain. "
        "Rewrite it so that it builds, passes `go vet` and its tests pass.\n\n"
        f"Go file to fix: {go_name}\n"
        f"Python file: {py_name}\n"
        f"Go package: {package}\n\n"
        f"What the Go toolchain reported for this file:\n```\n{listed}\n```\n\n"
        f"Rules:\n{_rules(package, test)}\n\n"
        f"{_deps_block(deps)}"
        f"Current Go file ({go_name}):\n```go\n{go.rstrip()}\n```\n\n"
        f"Python source ({py_name}):\n```python\n{python.rstrip()}\n```\n"
    )


_FIELD = re.compile(r"^(?P<name>[A-Za-z ]+): (?P<value>\S+)$", re.M)


def prompt_field(prompt: str, name: str) -> str | None:
    """The value of a ``Name: value`` line of a prompt (``Go file``, ``Python file``...)."""
    for match in _FIELD.finditer(prompt):
        if match["name"] == name:
            return match["value"]
    return None


_FENCE = re.compile(r"```(?:go|golang)?[ \t]*\n(.*?)```", re.S)
_PACKAGE = re.compile(r"^package \w+", re.M)


def extract_go(answer: str) -> str | None:
    """The Go file in a model's answer: the first fenced block that holds a ``package``
    clause, or the answer itself from its ``package`` line; None when there is none."""
    for match in _FENCE.finditer(answer):
        body = match.group(1)
        if _PACKAGE.search(body):
            return body.strip() + "\n"
    bare = _PACKAGE.search(answer)
    if bare is None:
        return None
    return answer[bare.start() :].split("```", 1)[0].strip() + "\n"
