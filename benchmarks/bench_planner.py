"""Streamed dispatch versus plan-then-dispatch, against the stand-in Ollama server.

Run: ``python benchmarks/bench_planner.py`` (``--rate`` tokens/s, ``--repeats``).

The stand-in streams a 5-step plan at a fixed token rate (one 4-character token per
NDJSON line, no model-load delay). Each step's capability takes as long to execute as one
step takes to generate: the time the stand-in takes to send that step's own tokens
(measured in a warm-up run, so it includes the stand-in's timer overhead). Measured, in
the same run:

- streamed: ``dispatch_stream(planner.stream(...))``; time to first dispatch, and the
  lag between the stand-in sending step 0's closing brace and step 0 starting;
- sequential: ``planner.plan(...)`` then ``dispatch_sequence(...)``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import anyio
from _common import load_average, report

from kaizen_async import Agent, Dispatcher, Planner, Session, capability
from kaizen_async.llm import OllamaProvider
from kaizen_async.testing import OllamaReply, StandInLLMServer

TOKEN = 4  # characters per token
STEPS = 5


def plan_text() -> str:
    steps = [{"capability": "work", "params": {"key": f"k{i}", "n": i}} for i in range(STEPS)]
    return json.dumps({"steps": steps})


def tokens(text: str) -> list[str]:
    return [text[i : i + TOKEN] for i in range(0, len(text), TOKEN)]


class Worker(Agent):
    """Works for a fixed time per step and notes when each step started."""

    agent_id = "worker"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: list[float] = []

    @capability("work", description="Work on one item for a while.")
    async def work(self, session: Session, params: dict[str, Any]) -> int:
        self.started.append(time.perf_counter())
        await anyio.sleep(self.seconds)
        await session.set(str(params["key"]), params["n"])
        return int(params["n"])


async def run_once(streamed: bool, rate: float, step_seconds: float) -> dict[str, float]:
    text = plan_text()
    pieces = tokens(text)
    first_step = json.dumps({"capability": "work", "params": {"key": "k0", "n": 0}})
    worker = Worker(step_seconds)
    reply = OllamaReply(pieces, delay=1.0 / rate)
    async with (
        StandInLLMServer([reply]) as server,
        OllamaProvider("bench", server.url) as llm,
        Session() as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(worker)
        planner = Planner(llm, dispatcher.capability_specs())
        start = time.perf_counter()
        if streamed:
            result = await dispatcher.dispatch_stream(planner.stream("work", session), session)
        else:
            plan = await planner.plan("work", session)
            result = await dispatcher.dispatch_sequence(plan.calls, session, plan_id=plan.plan_id)
        total = time.perf_counter() - start
        assert result.success and result.executed_count == STEPS, result
        exchange = await server.exchange(0)
    closed = exchange.text_sent_at(first_step)
    assert closed is not None
    return {
        "total_s": total,
        "first_dispatch_s": worker.started[0] - start,
        "step0_closed_s": closed - start,
        "lag_s": worker.started[0] - closed,
        "stream_s": exchange.sent_at["done"] - start,
    }


async def main(rate: float, repeats: int) -> None:
    load_average()
    await run_once(True, rate, 0.0)  # the first run also pays for imports and connections
    warm_up = await run_once(True, rate, 0.0)
    # one step's real generation time: its own tokens at the pace the stand-in really kept
    step_tokens = len(json.dumps({"capability": "work", "params": {"key": "k0", "n": 0}})) / TOKEN
    step_seconds = warm_up["stream_s"] / len(tokens(plan_text())) * step_tokens
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(repeats):  # interleaved, so both modes see the same machine
        for streamed in (True, False):
            runs[streamed].append(await run_once(streamed, rate, step_seconds))

    def median(mode: bool, key: str) -> float:
        values = sorted(run[key] for run in runs[mode])
        return values[len(values) // 2]

    stream_total, plan_total = median(True, "total_s"), median(False, "total_s")
    lag = max(run["lag_s"] for run in runs[True])
    closed = median(True, "step0_closed_s")
    allowed = max(0.005, 0.10 * closed)
    # the floor: the last step starts when its brace is sent and takes one step's time;
    # step i cannot start before step i-1 ends either
    floor = max(median(True, "stream_s") + step_seconds, closed + STEPS * step_seconds) / (
        median(False, "stream_s") + STEPS * step_seconds
    )
    rows = [
        ("stand-in stream length (5 steps)", f"{median(True, 'stream_s') * 1000:,.0f} ms", ""),
        ("execution time per step", f"{step_seconds * 1000:,.1f} ms", ""),
        ("step 0's closing brace sent at", f"{closed * 1000:,.1f} ms", ""),
        (
            "first dispatch, streamed",
            f"{median(True, 'first_dispatch_s') * 1000:,.1f} ms",
            f"{median(True, 'first_dispatch_s') / closed:.2f}",
        ),
        (
            "first dispatch, plan then dispatch",
            f"{median(False, 'first_dispatch_s') * 1000:,.1f} ms",
            f"{median(False, 'first_dispatch_s') / closed:.2f}",
        ),
        (
            "worst lag: brace sent -> step 0 starts",
            f"{lag * 1000:,.2f} ms",
            f"limit {allowed * 1000:.1f} ms",
        ),
        ("total, plan then dispatch (baseline)", f"{plan_total * 1000:,.0f} ms", "1.00"),
        ("total, streamed", f"{stream_total * 1000:,.0f} ms", f"{stream_total / plan_total:.3f}"),
        ("  (ideal: stream end + one step, over baseline)", "", f"{floor:.3f}"),
    ]
    report(
        "planner",
        rows,
        {
            "rate_tokens_per_s": rate,
            "repeats": repeats,
            "streamed": runs[True],
            "plan_then_dispatch": runs[False],
            "step_seconds": step_seconds,
            "total_ratio": stream_total / plan_total,
            "ideal_ratio": floor,
            "worst_lag_s": lag,
            "lag_limit_s": allowed,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="tokens per second")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.rate, args.repeats)
