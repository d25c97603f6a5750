"""Deterministic fixes: the Go compiler's most common complaints about converted code,
repaired without a model. Each rule reads one diagnostic and edits the file; diagnostics
no rule handles are left for the model.

- ``"X" imported and not used``: the import is removed.
- ``undefined: strings`` (a standard package): the import is added.
- ``no new variables on left side of :=``: that ``:=`` becomes ``=``.
- an import that cannot resolve offline (``package X is not in std``, ``cannot find module
  providing package X``; models often import the package's own files as packages): the
  import is removed and its ``name.`` qualifiers with it (all files share one package).
- ``x.name undefined (type T has no field or method name, but does have field Name)``:
  ``.name`` becomes ``.Name`` on that line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["STD_PACKAGES", "RuleResult", "apply_rules"]

#: standard packages a converted file is likely to use, by the name code refers to them
STD_PACKAGES = {
    "bufio": "bufio",
    "bytes": "bytes",
    "cmp": "cmp",
    "errors": "errors",
    "fmt": "fmt",
    "io": "io",
    "json": "encoding/json",
    "maps": "maps",
    "math": "math",
    "os": "os",
    "regexp": "regexp",
    "slices": "slices",
    "sort": "sort",
    "strconv": "strconv",
    "strings": "strings",
    "sync": "sync",
    "testing": "testing",
    "time": "time",
    "unicode": "unicode",
    "utf8": "unicode/utf8",
}

_LOCATION = r"^(?:vet: )?(?:\./)?[\w.\-/]+\.go:(?P<line>\d+)(?::(?P<col>\d+))?: "
_UNUSED_IMPORT = re.compile(_LOCATION + r'"(?P<path>[^"]+)" imported (?:as \w+ )?and not used')
_UNDEFINED = re.compile(_LOCATION + r"undefined: (?P<name>\w+)$")
_NO_NEW_VARS = re.compile(_LOCATION + r"no new variables on left side of :=")
_UNRESOLVED = re.compile(
    _LOCATION
    + r"(?:package (?P<a>\S+) is not in std"
    + r"|cannot find module providing package (?P<b>\S+?):"
    + r"|no required module provides package (?P<c>\S+?)[;:]"
    + r"|could not import (?P<d>\S+))"
)
_FIELD_CASE = re.compile(
    _LOCATION
    + r"\S*?\.(?P<wrong>\w+) undefined \(type .+ has no field or method (?P=wrong), "
    + r"but does have (?:exported )?(?:field|method) (?P<right>\w+)\)"
)
_IMPORT_SPEC = re.compile(r'^\s*(?:(?P<alias>[\w.]+)\s+)?"(?P<path>[^"]+)"\s*(?://.*)?$')


@dataclass
class RuleResult:
    """What the rules did to one file."""

    text: str
    applied: list[str] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def apply_rules(text: str, diagnostics: list[str]) -> RuleResult:
    """Apply every rule that matches one of ``diagnostics`` (lines about this file)."""
    lines = text.split("\n")
    applied: list[str] = []
    unhandled: list[str] = []
    remove_imports: set[str] = set()
    add_imports: set[str] = set()
    for diagnostic in diagnostics:
        if match := _NO_NEW_VARS.match(diagnostic):
            index = int(match["line"]) - 1
            if 0 <= index < len(lines) and ":=" in lines[index]:
                lines[index] = lines[index].replace(":=", "=", 1)
                applied.append(f"line {index + 1}: `:=` -> `=` (no new variables)")
                continue
        elif match := _FIELD_CASE.match(diagnostic):
            index = int(match["line"]) - 1
            wrong, right = match["wrong"], match["right"]
            pattern = re.compile(rf"\.{re.escape(wrong)}\b")
            if 0 <= index < len(lines) and pattern.search(lines[index]):
                lines[index] = pattern.sub("." + right, lines[index])
                applied.append(f"line {index + 1}: `.{wrong}` -> `.{right}`")
                continue
        elif match := _UNUSED_IMPORT.match(diagnostic):
            remove_imports.add(match["path"])
            applied.append(f'removed the unused import "{match["path"]}"')
            continue
        elif match := _UNRESOLVED.match(diagnostic):
            path = match["a"] or match["b"] or match["c"] or match["d"]
            remove_imports.add(path)
            applied.append(f'removed the import "{path}" (not available offline; one package)')
            continue
        elif (match := _UNDEFINED.match(diagnostic)) and match["name"] in STD_PACKAGES:
            path = STD_PACKAGES[match["name"]]
            if path not in add_imports:
                add_imports.add(path)
                applied.append(f'added the import "{path}"')
            continue
        unhandled.append(diagnostic)
    text = "\n".join(lines)
    if remove_imports:
        text = _remove_imports(text, remove_imports)
    if add_imports:
        text = _add_imports(text, sorted(add_imports - _imported(text)))
    return RuleResult(text, applied, unhandled)


def _import_lines(lines: list[str]) -> list[tuple[int, str | None, str]]:
    """(line index, alias, path) of every import spec."""
    found: list[tuple[int, str | None, str]] = []
    in_block = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if in_block:
            if stripped.startswith(")"):
                in_block = False
                continue
            if match := _IMPORT_SPEC.match(line):
                found.append((index, match["alias"], match["path"]))
        elif stripped.startswith("import ("):
            in_block = True
        elif stripped.startswith("import ") and (
            match := _IMPORT_SPEC.match(stripped.removeprefix("import "))
        ):
            found.append((index, match["alias"], match["path"]))
    return found


def _imported(text: str) -> set[str]:
    return {path for _, _, path in _import_lines(text.split("\n"))}


def _remove_imports(text: str, paths: set[str]) -> str:
    lines = text.split("\n")
    qualifiers: set[str] = set()
    drop: set[int] = set()
    for index, alias, path in _import_lines(lines):
        if path in paths:
            drop.add(index)
            if alias not in (None, "_", "."):
                qualifiers.add(alias)
            elif alias is None:
                qualifiers.add(path.rstrip("/").rsplit("/", 1)[-1])
    kept = [line for index, line in enumerate(lines) if index not in drop]
    text = re.sub(r"(?m)^import \(\s*\)\n?", "", "\n".join(kept))
    for name in qualifiers:
        # only for packages that cannot resolve: their names are this package's own
        if name not in STD_PACKAGES:
            text = re.sub(rf"(?<![\w.]){re.escape(name)}\.(?=[A-Za-z_])", "", text)
    return text


def _add_imports(text: str, paths: list[str]) -> str:
    if not paths:
        return text
    lines = text.split("\n")
    specs = [f'\t"{p}"' for p in paths]
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("import ("):
            lines[index + 1 : index + 1] = specs
            return "\n".join(lines)
        if stripped.startswith("import ") and _IMPORT_SPEC.match(stripped.removeprefix("import ")):
            lines[index : index + 1] = [
                "import (",
                "\t" + stripped.removeprefix("import "),
                *specs,
                ")",
            ]
            return "\n".join(lines)
    for index, line in enumerate(lines):
        if line.startswith("package "):
            lines[index + 1 : index + 1] = ["", "import (", *specs, ")"]
            return "\n".join(lines)
    return text
