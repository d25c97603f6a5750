"""The mapper: reads a Python package, finds which of its files import which, and plans
the conversion (a Go file name per Python file, and waves of files that can be converted
at the same time because none of them needs another of the same wave).

The whole package becomes one Go package (Go keeps a package in one directory): files in
sub-directories are flattened (``util/text.py`` -> ``util_text.go``) and tests
(``test_x.py``, ``x_test.py``, anything under ``tests/``, ``conftest.py``) become
``*_test.go`` files of that same package.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from kaizen_async import Agent, InvokeResult, Session, capability

__all__ = [
    "MapParams",
    "MapperAgent",
    "PlannedFile",
    "SourceFile",
    "go_package_name",
    "plan_package",
    "read_package",
]

MAPPER_ID = "py2go_mapper"
#: Go file-name suffixes that are build constraints (``x_linux.go`` builds only on Linux)
_GO_CONSTRAINT_SUFFIXES = frozenset(
    {
        *("aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios"),
        *("js", "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1"),
        *("windows", "zos", "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle"),
        *("mips64", "mips64le", "ppc64", "ppc64le", "riscv64", "s390x", "wasm", "test"),
    }
)
_GO_KEYWORDS = frozenset(
    {
        *("break", "case", "chan", "const", "continue", "default", "defer", "else"),
        *("fallthrough", "for", "func", "go", "goto", "if", "import", "interface", "map"),
        *("package", "range", "return", "select", "struct", "switch", "type", "var"),
    }
)
_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".venv", "venv", "build", "dist"})


@dataclass(frozen=True)
class SourceFile:
    """One Python file of the package: its path relative to the package root ("/" separated)."""

    path: str
    text: str

    @property
    def module(self) -> str:
        """The dotted module name relative to the package (``""`` for the root ``__init__``)."""
        parts = self.path.removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)

    @property
    def is_package(self) -> bool:
        return self.path.rsplit("/", 1)[-1] == "__init__.py"

    @property
    def is_test(self) -> bool:
        parts = self.path.split("/")
        name = parts[-1].removesuffix(".py")
        return (
            name.startswith("test_")
            or name.endswith("_test")
            or name == "conftest"
            or "tests" in parts[:-1]
            or "test" in parts[:-1]
        )


@dataclass
class PlannedFile:
    """A file of the plan: where it goes and what it needs first."""

    py: str
    go: str
    test: bool
    deps: list[str] = field(default_factory=list)
    wave: int = 0
    lines: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "py": self.py,
            "go": self.go,
            "test": self.test,
            "deps": self.deps,
            "wave": self.wave,
            "lines": self.lines,
        }


def read_package(root: Path) -> tuple[list[SourceFile], list[str]]:
    """Every ``.py`` file under ``root``, sorted by path, and the ones skipped as empty.

    A file with nothing but whitespace (an empty ``__init__.py``) has nothing to convert.
    """
    files: list[SourceFile] = []
    skipped: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        text = path.read_text(encoding="utf-8")
        name = relative.as_posix()
        if text.strip():
            files.append(SourceFile(name, text))
        else:
            skipped.append(name)
    return files, skipped


def go_package_name(root: Path) -> str:
    """A Go package name for the directory: lower-case letters, digits and nothing else."""
    name = re.sub(r"[^a-z0-9]", "", root.resolve().name.lower())
    if not name or name[0].isdigit() or name in _GO_KEYWORDS:
        name = "pkg" + name
    return name


def _go_file_name(source: SourceFile) -> str:
    parts = source.path.removesuffix(".py").split("/")
    if source.is_test:
        parts = [p for p in parts if p not in ("tests", "test")]
    stem_parts = [p.strip("_") for p in parts]
    if source.is_package:
        stem_parts = stem_parts[:-1] or ["doc"]
    stem = "_".join(p for p in stem_parts if p) or "doc"
    if source.is_test:
        if stem.startswith("test_"):
            stem = stem[len("test_") :]
        stem = stem.removesuffix("_test") or "package"
        stem = stem.strip("_") or "package"
    stem = re.sub(r"[^A-Za-z0-9_]", "_", stem).lower()
    if stem.rsplit("_", 1)[-1] in _GO_CONSTRAINT_SUFFIXES and "_" in stem:
        stem += "_py"
    return f"{stem}_test.go" if source.is_test else f"{stem}.go"


def _imports(source: SourceFile, modules: dict[str, str], package_name: str) -> set[str]:
    """The files of this package that ``source`` imports (paths), found with ``ast``."""
    try:
        tree = ast.parse(source.text, filename=source.path)
    except SyntaxError:
        return set()
    # the package the file lives in, as a dotted name relative to the root
    here = source.module if source.is_package else source.module.rpartition(".")[0]
    found: set[str] = set()

    def resolve(dotted: str) -> None:
        # "a.b.c" may be a module, or a name inside module "a.b": take the longest module
        parts = dotted.split(".") if dotted else []
        for end in range(len(parts), -1, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                found.add(modules[candidate])
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                head, _, rest = alias.name.partition(".")
                if head == package_name:
                    resolve(rest)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here.split(".") if here else []
                up = node.level - 1
                if up > len(base_parts):
                    continue
                base = ".".join(base_parts[: len(base_parts) - up])
                target = ".".join(p for p in (base, node.module or "") if p)
            elif node.module and node.module.partition(".")[0] == package_name:
                target = node.module.partition(".")[2]
            else:
                continue
            for alias in node.names:  # `from . import x` imports module x
                sub = ".".join(p for p in (target, alias.name) if p)
                if sub in modules:
                    found.add(modules[sub])
                else:
                    resolve(target)
    found.discard(source.path)
    return found


def plan_package(root: Path) -> dict[str, Any]:
    """The conversion plan of the package at ``root`` (see the module docstring)."""
    files, skipped = read_package(root)
    package_dir = root.resolve().name
    modules = {f.module: f.path for f in files}
    by_path = {f.path: f for f in files}
    planned: dict[str, PlannedFile] = {}
    used_names: set[str] = set()
    for source in files:
        go_name = _go_file_name(source)
        base, suffix = (
            (go_name[: -len("_test.go")], "_test.go")
            if source.is_test
            else (
                go_name[: -len(".go")],
                ".go",
            )
        )
        number = 2
        while go_name in used_names:
            go_name = f"{base}{number}{suffix}"
            number += 1
        used_names.add(go_name)
        planned[source.path] = PlannedFile(
            py=source.path,
            go=go_name,
            test=source.is_test,
            deps=sorted(_imports(source, modules, package_dir)),
            lines=len(source.text.splitlines()),
        )
    waves, cycles = _waves({p: f.deps for p, f in planned.items()})
    for index, wave in enumerate(waves):
        for path in wave:
            planned[path].wave = index
    return {
        "package": go_package_name(root),
        "files": [planned[p].to_dict() for wave in waves for p in wave],
        "waves": waves,
        "skipped": skipped,
        "cycles": cycles,
        "python_lines": sum(len(by_path[p].text.splitlines()) for p in by_path),
    }


def _waves(deps: dict[str, list[str]]) -> tuple[list[list[str]], list[str]]:
    """Topological levels: wave k holds the files whose deps are all in earlier waves.

    Files caught in an import cycle cannot be ordered; they go together into one wave
    after everything else they need, and are listed as ``cycles``.
    """
    remaining = {path: set(d) & deps.keys() for path, d in deps.items()}
    waves: list[list[str]] = []
    cycles: list[str] = []
    done: set[str] = set()
    while remaining:
        ready = sorted(p for p, d in remaining.items() if d <= done)
        if not ready:  # a cycle: take every file whose deps outside the cycle are done
            ready = sorted(remaining)
            cycles.extend(ready)
        waves.append(ready)
        done.update(ready)
        for path in ready:
            del remaining[path]
    return waves, cycles


class MapParams(BaseModel):
    """Params of ``map_package``."""

    model_config = ConfigDict(extra="forbid")

    source: str
    workdir: str
    settings: dict[str, Any]


class MapperAgent(Agent):
    """Reads the source package and writes the plan (state ``job``, ``plan``; artifacts
    ``plan.json`` and ``source/<file>.py``, a snapshot the converter works from)."""

    agent_id = MAPPER_ID
    name = "Mapper"
    description = "Orders a Python package's files by their imports."

    @capability(
        "map_package",
        params=MapParams,
        description="Read the Python package at `source` and plan its conversion to Go.",
        idempotent=True,
    )
    async def map_package(self, session: Session, params: MapParams) -> InvokeResult:
        root = Path(params.source)
        found = await anyio.to_thread.run_sync(_read_and_plan, root)
        if found is None:
            return self.invalid_params(f"no such directory: {root}", "map_package")
        plan, files = found
        if not plan["files"]:
            return self.invalid_params(f"no Python files under {root}", "map_package")
        job = {
            "source": params.source,
            "workdir": params.workdir,
            "package": plan["package"],
            "module": f"example.com/py2go/{plan['package']}",
            **params.settings,
        }
        digest = hashlib.sha256()
        async with session.transaction() as tx:
            for source in files:
                data = source.text.encode()
                digest.update(source.path.encode() + b"\0" + data)
                tx.write_artifact(f"source/{source.path}", data)
            plan["source_sha256"] = digest.hexdigest()
            tx.write_artifact("plan.json", _json_bytes(plan))
            tx.set("job", job)
            tx.set("plan", plan)
        return self.ok(
            {
                "files": len(plan["files"]),
                "waves": len(plan["waves"]),
                "package": plan["package"],
            },
            "map_package",
        )


def _read_and_plan(root: Path) -> tuple[dict[str, Any], list[SourceFile]] | None:
    """The plan and the files it was made from (None: ``root`` is not a directory)."""
    if not root.is_dir():
        return None
    return plan_package(root), read_package(root)[0]


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
