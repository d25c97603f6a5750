"""What signed checkpoints cost, beside the same work unsigned, in the same invocation.

Run: ``python benchmarks/bench_signing.py`` (``--quick`` for a smaller run), when the
machine is otherwise idle (the load average is printed first).

Rows:
- durable ``Session.set`` through a ``SessionHub`` on an ``SQLiteStore``, 64 callers on 64
  sessions, unsigned and with the store signing at every commit (target: >= 0.9x);
- durable ``set`` commits, 64 callers on 64 sessions, through ``SQLiteStore.commit``
  (what a store-backed ``Session.set`` hands its store: one batch holding one
  ``state_set`` record and its state key), unsigned and signing at every commit
  (target: signed >= 0.9x unsigned). Unsigned and signed runs alternate, best of N each,
  so both see the same machine. For comparison: each checkpoint signed alone
  (``CheckpointPolicy(group=False)``), which the default avoids.
- a 100,000-entry ``.kaizen`` file saved with a signer: ``Session.load`` with a keyring and
  ``require_signed=True`` (chain, state and the checkpoint's signature), target < 1 s;
  then ``verify(keyring=...)`` of the loaded session; and an unsigned load as baseline.
- Ed25519 sign and verify of one checkpoint (the primitives).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import anyio
from _common import load_average, report
from bench_session import fill
from bench_store import CALLERS, make_sets

from kaizen_async import Session, SessionHub
from kaizen_async._trajectory import SEQ, Record
from kaizen_async.signing import CheckpointPolicy, Ed25519Signer, Keyring, checkpoint_text
from kaizen_async.stores import Batch, SQLiteStore

TARGET_RATIO = 0.9
TARGET_LOAD_S = 1.0
Sessions = list[tuple[str, Record, list[tuple[Record, bytes]]]]


async def store_rate(
    directory: str, sessions: Sessions, signer: Ed25519Signer | None, group: bool = True
) -> tuple[float, int]:
    """Commits per second of every session's sets, each session by its own caller."""
    path = os.path.join(directory, f"store-{time.perf_counter_ns()}.db")
    policy = CheckpointPolicy(group=group)
    async with SQLiteStore(path, signer=signer, checkpoints=policy) as store:
        for sid, created, _ in sessions:
            await store.create(
                Batch(sid, 0, [created], 0), max_artifact_size=1 << 20, workspace_path=None
            )

        async def caller(sid: str, sets: list[tuple[Record, bytes]]) -> None:
            commit = store.commit
            for record, value in sets:
                await commit(
                    Batch(sid, record[SEQ] - 1, (record,), record[SEQ] - 1, {"key": value})
                )

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for sid, _, sets in sessions:
                tg.start_soon(caller, sid, sets)
        elapsed = time.perf_counter() - start
        signed = len(await store.read_checkpoints(sessions[0][0]))
    return sum(len(sets) for _, _, sets in sessions) / elapsed, signed


async def hub_rate(directory: str, per_caller: int, signer: Ed25519Signer | None) -> float:
    """Durable ``Session.set`` per second through a ``SessionHub`` on an ``SQLiteStore``,
    64 callers each on its own session."""
    path = os.path.join(directory, f"hub-{time.perf_counter_ns()}.db")
    async with SessionHub(SQLiteStore(path, signer=signer)) as hub:
        ids = [await hub.create(f"s{c:02d}") for c in range(CALLERS)]

        async def caller(sid: str) -> None:
            async with hub.open(sid) as session:
                for i in range(per_caller):
                    await session.set("key", {"i": i, "text": "hello world"})

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for sid in ids:
                tg.start_soon(caller, sid)
        elapsed = time.perf_counter() - start
    return CALLERS * per_caller / elapsed


async def load_times(directory: str, entries: int, signer: Ed25519Signer) -> dict[str, float]:
    ring = Keyring.parse(signer.keyring_line())
    paths = {}
    for name, key in (("unsigned", None), ("signed", signer)):
        path = os.path.join(directory, f"{name}.kaizen")
        async with Session(signer=key) as session:
            await fill(session, entries - 1)
            await session.save(path)  # its session_saved entry makes `entries`
        paths[name] = path
    best = {"unsigned_load_s": 1e9, "signed_load_s": 1e9, "signed_verify_s": 1e9}
    for _ in range(3):
        start = time.perf_counter()
        async with Session.load(paths["unsigned"]):
            best["unsigned_load_s"] = min(best["unsigned_load_s"], time.perf_counter() - start)
        start = time.perf_counter()
        async with Session.load(paths["signed"], keyring=ring, require_signed=True) as loaded:
            best["signed_load_s"] = min(best["signed_load_s"], time.perf_counter() - start)
            start = time.perf_counter()
            checked = await loaded.verify(keyring=ring)
            best["signed_verify_s"] = min(best["signed_verify_s"], time.perf_counter() - start)
            assert checked.last_signed_seq == checked - 1  # all but session_loaded
    return best


def primitives(signer: Ed25519Signer, n: int) -> tuple[float, float]:
    text = checkpoint_text("order-42", 17, "ab" * 32, 0, "host:1234", "2026-05-09T07:35:25Z")
    start = time.perf_counter()
    for _ in range(n):
        signature = signer.sign(text)
    sign_us = (time.perf_counter() - start) / n * 1e6
    key = next(iter(Keyring.parse(signer.keyring_line())))
    start = time.perf_counter()
    for _ in range(n):
        assert key.verify(signature, text)
    return sign_us, (time.perf_counter() - start) / n * 1e6


async def main(quick: bool) -> None:
    load = load_average()
    repeats = 5 if quick else 7
    per_caller = 200 if quick else 1_000
    entries = 100_000
    signer = Ed25519Signer.generate()
    many = [(f"s{c:02d}", *make_sets(f"s{c:02d}", per_caller)) for c in range(CALLERS)]
    rates: dict[str, float] = {
        "unsigned": 0.0,
        "signed": 0.0,
        "alone": 0.0,
        "hub_unsigned": 0.0,
        "hub_signed": 0.0,
    }
    signed_count = 0
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        for _ in range(repeats):
            rate, _ = await store_rate(directory, many, None)
            rates["unsigned"] = max(rates["unsigned"], rate)
            rate, signed_count = await store_rate(directory, many, signer)
            rates["signed"] = max(rates["signed"], rate)
            rate, _ = await store_rate(directory, many, signer, group=False)
            rates["alone"] = max(rates["alone"], rate)
            rates["hub_unsigned"] = max(
                rates["hub_unsigned"], await hub_rate(directory, per_caller, None)
            )
            rates["hub_signed"] = max(
                rates["hub_signed"], await hub_rate(directory, per_caller, signer)
            )
        times = await load_times(directory, entries, signer)
    sign_us, verify_us = primitives(signer, 2_000)
    ratio = rates["signed"] / rates["unsigned"]
    hub_ratio = rates["hub_signed"] / rates["hub_unsigned"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        (
            f"durable set, {CALLERS} callers on {CALLERS} sessions, unsigned (baseline)",
            f"{rates['unsigned']:,.0f}/s",
            "1.00",
        ),
        (
            f"  same, signing at every commit [target >= {TARGET_RATIO}x]",
            f"{rates['signed']:,.0f}/s",
            f"{ratio:.2f} {verdict(ratio >= TARGET_RATIO)}",
        ),
        (
            "  same, each checkpoint signed alone (group=False, for comparison)",
            f"{rates['alone']:,.0f}/s",
            f"{rates['alone'] / rates['unsigned']:.2f}",
        ),
        (
            f"durable Session.set via SessionHub, {CALLERS} callers on {CALLERS} sessions, "
            "unsigned (baseline)",
            f"{rates['hub_unsigned']:,.0f}/s",
            "1.00",
        ),
        (
            f"  same, the store signing at every commit [target >= {TARGET_RATIO}x]",
            f"{rates['hub_signed']:,.0f}/s",
            f"{hub_ratio:.2f} {verdict(hub_ratio >= TARGET_RATIO)}",
        ),
        (
            f"  checkpoints per session ({per_caller} commits each)",
            f"{signed_count:,}",
            "",
        ),
        (
            f"load of a {entries:,}-entry file, unsigned (baseline)",
            f"{times['unsigned_load_s'] * 1000:,.0f} ms",
            "1.00",
        ),
        (
            f"load of the same, signed, keyring + require_signed [target < {TARGET_LOAD_S:.0f} s]",
            f"{times['signed_load_s'] * 1000:,.0f} ms",
            f"{times['signed_load_s'] / times['unsigned_load_s']:.2f} "
            f"{verdict(times['signed_load_s'] < TARGET_LOAD_S)}",
        ),
        (
            f"verify(keyring=...) of the loaded {entries:,} entries [target < 1 s]",
            f"{times['signed_verify_s'] * 1000:,.0f} ms",
            verdict(times["signed_verify_s"] < TARGET_LOAD_S),
        ),
        ("Ed25519 sign of one checkpoint", f"{sign_us:,.1f} us", ""),
        ("Ed25519 verify of one checkpoint", f"{verify_us:,.1f} us", ""),
    ]
    report(
        "signing",
        rows,
        {
            "load_average_1min": load,
            "set_64_unsigned_per_s": rates["unsigned"],
            "set_64_signed_per_s": rates["signed"],
            "set_64_signed_alone_per_s": rates["alone"],
            "ratio_signed": ratio,
            "hub_set_64_unsigned_per_s": rates["hub_unsigned"],
            "hub_set_64_signed_per_s": rates["hub_signed"],
            "hub_ratio_signed": hub_ratio,
            **times,
            "sign_us": sign_us,
            "verify_us": verify_us,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    anyio.run(main, parser.parse_args().quick)
