"""Draw throughput against concurrency for kaizen_async and its peers into a PNG.

Run: ``python benchmarks/bench_peers.py --sweep && python benchmarks/plot.py``. It reads
the JSON the sweep wrote (``benchmarks/results/peers_sweep.json``) and writes
``docs/throughput.png``: one line per runtime, steps/s (log scale) against the number of
concurrent callers, with the asyncio.Queue request/reply baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # after choosing the backend

HERE = Path(__file__).parent
DEFAULT_INPUT = HERE / "results" / "peers_sweep.json"
DEFAULT_OUTPUT = HERE.parent / "docs" / "throughput.png"


def plot(results: dict[str, Any], output: Path) -> None:
    """One line per measured runtime (a single marker where it has one point)."""
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    names: dict[str, str] = results["names"]
    for key, rates in results["per_s"].items():
        if not rates:
            continue
        callers = sorted(int(n) for n in rates)
        values = [rates[str(n)] for n in callers]
        style = "-o" if len(callers) > 1 else "D"
        width = 2.5 if key == "kaizen_async" else 1.5
        ax.plot(callers, values, style, label=names.get(key, key), linewidth=width)
    queue = results["asyncio_queue_per_s"]
    ax.axhline(queue, color="grey", linestyle="--", linewidth=1)
    ax.annotate(
        "asyncio.Queue request/reply, 1 caller (no work)",
        (1, queue),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize=8,
        color="grey",
    )
    levels = results["levels"]
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.set_yscale("log")
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("steps/s (log scale)")
    ax.set_title(
        f"client -> router -> 1 of {results['workers']} workers -> session write -> reply\n"
        f"kaizen_async records 5 hash-chained entries per step; the peers record nothing",
        fontsize=10,
    )
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    load = results["load_average"]
    busy = load > 0.5 * results.get("cores", 1)  # as _common.load_average warns
    fig.text(
        0.99,
        0.01,
        f"{results['command']} (load average {load:.2f} at start"
        + ("; the machine was busy: not representative)" if busy else ")"),
        ha="right",
        fontsize=6,
        color="grey",
    )
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="bench_peers JSON")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the PNG to write")
    args = parser.parse_args()
    results = json.loads(args.input.read_text())
    plot(results, args.output)
    print(f"wrote {args.output} from {args.input}")


if __name__ == "__main__":
    main()
