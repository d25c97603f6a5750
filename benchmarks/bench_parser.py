"""Throughput of the streaming plan parser (``PlanStreamParser``), in MB/s.

A synthetic plan of 2,000 steps with realistic params (state keys, file paths, Python
source with quotes, braces and escapes, nested filters and lists, numbers, emoji) is
serialized compactly and indented, then fed to the parser in 8- and 64-character pieces,
as a model's token stream would arrive. Baselines from the same run: ``orjson.loads`` of
the whole text (a C parser that sees everything at once) and a plain ``for ch in text``
loop (the floor for any per-character Python scanner).

Run: ``python benchmarks/bench_parser.py`` (writes ``benchmarks/results/parser.json``); the
exit status is 1 when the slowest parser run is under the 5 MB/s target.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from _common import load_average, report

from kaizen_async._plan_parser import PlanStreamParser

TARGET_MB_S = 5.0

_SOURCE = '''from __future__ import annotations

class {name}Agent(Agent):
    """Turns the value at "{key}" into something {adj}."""

    def info(self) -> AgentInfo:
        return AgentInfo(agent_id="{key}_v1", name="{name}", capabilities=["{key}"])

    async def invoke(self, capability: str, session: Session, params: dict) -> InvokeResult:
        value = await session.get(params.get("key", "text"))
        if not isinstance(value, str):
            return self._invalid_params(f"expected a str at {{params['key']!r}}")
        await session.set(params["key"], value[::-1])
        return InvokeResult.ok({{"original": value, "result": value[::-1]}})
'''


def make_plan(n_steps: int, seed: int = 7) -> dict[str, Any]:
    """A plan mixing small and large steps, as a coding/data agent would produce."""
    rng = random.Random(seed)
    words = ["reverse", "upper", "count", "slugify", "translate", "summarize", "index"]
    steps: list[dict[str, Any]] = []
    for i in range(n_steps):
        kind = i % 5
        word = rng.choice(words)
        if kind == 0:
            step = {"capability": "reverse", "params": {"key": f"text_{i}"}}
        elif kind == 1:
            source = _SOURCE.format(name=word.title(), key=word, adj=rng.choice(["tidy", "new"]))
            step = {
                "capability": "write_file",
                "params": {"path": f"agents/{word}_{i}.py", "content": source, "overwrite": True},
            }
        elif kind == 2:
            step = {
                "capability": "search",
                "params": {
                    "query": f'"{word}" agent async {{streaming}} [{i}]',
                    "max_results": rng.randint(1, 50),
                    "filters": {"language": ["en", "de"], "since": "2025-01-01", "score": 0.75},
                },
            }
        elif kind == 3:
            step = {
                "capability": "http_request",
                "params": {
                    "method": "POST",
                    "url": f"https://api.example.com/v1/items/{i}?q={word}&limit=10",
                    "headers": {"Content-Type": "application/json", "X-Trace": f"{i:08x}"},
                    "body": {"name": f"item {i} 🚀 café", "tags": [word, "batch"], "price": 12.5},
                },
            }
        else:
            step = {
                "capability": "summarize",
                "params": {
                    "key": f"doc_{i}",
                    "max_words": 120,
                    "style": 'bullet points — concise, no "fluff"\\n',
                },
            }
        steps.append(step)
    return {"steps": steps}


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def parse_streamed(chunks: list[str], expected: int) -> None:
    parser = PlanStreamParser()
    seen = 0
    for chunk in chunks:
        seen += len(parser.feed(chunk))
    outcome = parser.finish()
    if not outcome.complete or seen != expected:
        raise AssertionError(f"parser saw {seen}/{expected} steps: {outcome}")


def char_loop(text: str) -> int:
    count = 0
    for ch in text:
        if ch == "{":
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    load_average()
    ap = argparse.ArgumentParser(description="PlanStreamParser throughput")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    plan = make_plan(args.steps)
    texts = {
        "compact": orjson.dumps(plan).decode(),
        "indented": orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode(),
    }
    results: list[dict[str, Any]] = []
    rows: list[tuple[str, str, str]] = []
    for layout, text in texts.items():
        mb = len(text.encode()) / 1e6
        runs: list[tuple[str, Callable[[], object]]] = [
            (f"PlanStreamParser, {size}-char pieces", partial(parse_streamed, pieces, args.steps))
            for size in (8, 64)
            for pieces in [[text[i : i + size] for i in range(0, len(text), size)]]
        ]
        runs.append(("baseline: orjson.loads(whole text)", partial(orjson.loads, text)))
        runs.append(("baseline: for ch in text", partial(char_loop, text)))
        rates = {method: mb / best_of(args.repeat, fn) for method, fn in runs}
        floor = rates["baseline: for ch in text"]
        for method, rate in rates.items():
            results.append(
                {"layout": layout, "method": method, "mb": round(mb, 3), "mb_per_s": round(rate, 2)}
            )
            rows.append(
                (
                    f"{layout} {mb:.2f} MB, {method}",
                    f"{rate:.2f} MB/s",
                    f"{rate / floor:.2f}x for-ch",
                )
            )

    slowest = min(r["mb_per_s"] for r in results if r["method"].startswith("PlanStreamParser"))
    verdict = "meets" if slowest >= TARGET_MB_S else "MISSES"
    rows.append(
        (
            "slowest PlanStreamParser run",
            f"{slowest:.2f} MB/s",
            f"{verdict} the {TARGET_MB_S:g} MB/s target",
        )
    )
    report(
        "parser",
        rows,
        {
            "steps": args.steps,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "target_mb_per_s": TARGET_MB_S,
            "slowest_parser_mb_per_s": slowest,
            "results": results,
        },
    )
    return 0 if slowest >= TARGET_MB_S else 1


if __name__ == "__main__":
    sys.exit(main())
