"""Commands that read one session: ``show``, ``log``, ``state``, ``verify``, ``artifacts``."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from .._canonical import decode
from .._exceptions import ErrorCode, KaizenError, KaizenValidationError, SessionCorruptedError
from .._state import SessionCore
from .._trajectory import CONTENT, ENTRY_TYPE, HASH, SEQ, TIMESTAMP, EntryType
from .._verification import check_checkpoints, verify_options
from ._common import SESSION_HELP, json_option, run, session_argument, wide_option
from ._errors import OK, BadInput, CliError, IOFailure, describe
from ._naming import StoreURL, is_url, parse_session_names, parse_store_url
from ._output import (
    compact,
    emit_json,
    entry_json,
    entry_row,
    field_table,
    progress_bar,
    short_hash,
    short_time,
    table,
)
from ._sources import open_source, open_store

__all__ = ["artifacts", "log", "show", "state", "verify"]

_ENTRY_TYPES = [kind.value for kind in EntryType]
_LOG_HEADERS = ("SEQ", "TIME", "AGENT", "TYPE", "CONTENT")


def summarize(core: SessionCore) -> dict[str, Any]:
    """The facts ``kaizen show`` prints about a session's history, state and artifacts."""
    records = core.records
    kinds = Counter(r[ENTRY_TYPE] for r in records)
    forked: dict[str, Any] | None = None
    steps_ok = steps_failed = 0
    for record in records:
        if record[ENTRY_TYPE] == EntryType.SESSION_FORKED.value:
            content = decode(record[CONTENT])
            forked = {
                "parent_session_id": content.get("parent_session_id"),
                "forked_at_seq": content.get("forked_at_seq"),
            }
        elif record[ENTRY_TYPE] == EntryType.PLAN_STEP_COMPLETED.value:
            if decode(record[CONTENT]).get("success") is True:
                steps_ok += 1
            else:
                steps_failed += 1
    return {
        "session_id": core.session_id,
        "entries": len(records),
        "head_hash": core.head,
        "state_version": core.version,
        "state_keys": len(core.state),
        "artifacts": len(core.artifacts),
        "created": records[0][TIMESTAMP] if records else None,
        "updated": records[-1][TIMESTAMP] if records else None,
        "forked_from": forked,
        "plans": {
            "created": kinds.get(EntryType.PLAN_CREATED.value, 0),
            "failed": kinds.get(EntryType.PLAN_FAILED.value, 0),
            "steps_succeeded": steps_ok,
            "steps_failed": steps_failed,
        },
        "entry_types": dict(sorted(kinds.items())),
    }


def _one(tokens: tuple[str, ...]) -> Any:
    return parse_session_names(tokens, count=1)[0]


async def _list_store(url: StoreURL, as_json: bool) -> int:
    async with open_store(url) as store:
        sessions = await store.list_sessions()
    rows: list[dict[str, Any]] = [
        {
            "session_id": info.session_id,
            "entries": info.trajectory_length,
            "state_version": info.state_version,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "metadata": dict(info.metadata),
        }
        for info in sessions
    ]
    if as_json:
        for row in rows:
            emit_json(row)
        return OK
    if not rows:
        click.echo(f"{url}: no sessions")
        return OK
    table(
        ("SESSION", "ENTRIES", "VERSION", "UPDATED", "METADATA"),
        [
            [
                r["session_id"],
                str(r["entries"]),
                str(r["state_version"]),
                short_time(r["updated_at"]),
                compact(r["metadata"]) if r["metadata"] else "",
            ]
            for r in rows
        ],
    )
    return OK


@click.command(epilog=SESSION_HELP)
@session_argument(metavar="SESSION | URL")
@json_option("Print one JSON object (a store's listing: one per line).")
def show(session: tuple[str, ...], as_json: bool) -> int:
    """Summarize a session: id, size, state, artifacts, plans, where it came from.

    Given only a store URL, list the sessions the store holds.
    """
    if len(session) == 1 and is_url(session[0]):
        url = parse_store_url(session[0])
        return run(lambda: _list_store(url, as_json))
    name = _one(session)

    async def body() -> int:
        async with open_source(name) as source:
            core = await source.core()
            info = {"source": str(name), "kind": source.kind, **await source.facts()}
            info.update(summarize(core))
        if as_json:
            emit_json(info)
            return OK
        plans = info["plans"]
        fields = [
            ("session", info["session_id"]),
            ("source", f"{name} ({source.kind}" + _schema(info) + ")"),
            ("entries", f"{info['entries']}, head {short_hash(info['head_hash'])}"),
            ("state", f"version {info['state_version']}, {info['state_keys']} key(s)"),
            ("artifacts", str(info["artifacts"])),
            ("created", short_time(info["created"]) if info["created"] else "-"),
            ("updated", short_time(info["updated"]) if info["updated"] else "-"),
        ]
        if info["forked_from"]:
            fork = info["forked_from"]
            fields.append(
                ("forked from", f"{fork['parent_session_id']} at seq {fork['forked_at_seq']}")
            )
        fields.append(
            (
                "plans",
                f"{plans['created']} created, {plans['failed']} failed; steps: "
                f"{plans['steps_succeeded']} succeeded, {plans['steps_failed']} failed",
            )
        )
        fields.append(
            ("entry types", ", ".join(f"{k} {v}" for k, v in info["entry_types"].items()))
        )
        field_table(fields)
        return OK

    return run(body)


def _schema(info: dict[str, Any]) -> str:
    if "schema_version" in info:
        return f", schema {info['schema_version']}"
    return ""


@click.command(epilog=SESSION_HELP)
@session_argument()
@click.option(
    "--type",
    "entry_types",
    multiple=True,
    type=click.Choice(_ENTRY_TYPES),
    metavar="TYPE",
    help="Only entries of this type (repeat for several), e.g. state_set, plan_created.",
)
@click.option("--agent", "agent_id", metavar="AGENT", help="Only entries written by this agent.")
@click.option(
    "--since",
    "since_seq",
    type=click.IntRange(min=0),
    metavar="SEQ",
    help="Only entries after this seq.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="Only the last N matching entries.",
)
@wide_option()
@json_option("Print each entry as one JSON object per line (TrajectoryEntry.to_dict()).")
def log(
    session: tuple[str, ...],
    entry_types: tuple[str, ...],
    agent_id: str | None,
    since_seq: int | None,
    limit: int | None,
    wide: bool,
    as_json: bool,
) -> int:
    """Print the trajectory, oldest first, filtered by type, agent and seq."""
    name = _one(session)

    async def body() -> int:
        async with open_source(name) as source:
            records = await source.entries(
                since_seq=since_seq,
                entry_types=entry_types or None,
                agent_id=agent_id,
                limit=limit,
            )
        if as_json:
            for record in records:
                emit_json(entry_json(record))
        else:
            table(_LOG_HEADERS, [entry_row(r) for r in records], wide=wide)
        return OK

    return run(body)


@click.command(epilog=SESSION_HELP)
@session_argument()
@click.option(
    "--at",
    "at_version",
    type=click.IntRange(min=0),
    metavar="VERSION",
    help="The state right after this state version (0 is empty), rebuilt by replay.",
)
@wide_option()
@json_option('Print one object: {"state_version": V, "state": {...}}.')
def state(session: tuple[str, ...], at_version: int | None, wide: bool, as_json: bool) -> int:
    """Print a session's state (the current one, or as it was at a version)."""
    name = _one(session)

    async def body() -> int:
        async with open_source(name) as source:
            core = await source.core()
            version = core.version if at_version is None else at_version
            values = core.state_at(version)
        if as_json:
            emit_json({"state_version": version, "state": values})
            return OK
        click.echo(f"state version {version} of {core.version}, {len(values)} key(s)")
        table(("KEY", "VALUE"), [[k, compact(v)] for k, v in sorted(values.items())], wide=wide)
        return OK

    return run(body)


#: exit codes of ``kaizen verify`` (the issue's contract for verifiers; see VERIFY_EXITS)
VERIFIED, TAMPERED, UNVERIFIABLE, USAGE_OR_IO = 0, 1, 2, 3
_UNVERIFIABLE = frozenset({ErrorCode.UNKNOWN_KEY, ErrorCode.UNSIGNED_TAIL})
VERIFY_EXITS = f"""\b
Exit codes of verify:
  {VERIFIED}  verified
  {TAMPERED}  tampered or invalid: a broken chain, state or digest, a checkpoint whose head
     differs or whose signature fails, a rollback or truncation the anchors show
  {UNVERIFIABLE}  unverifiable: more unsigned entries than --max-unsigned-tail, a key the
     keyring does not hold
  {USAGE_OR_IO}  usage or I/O error: bad options, a missing or unreadable session, keyring or
     anchor file

{SESSION_HELP}"""


class _VerifyCommand(click.Command):
    """``verify`` reports usage errors with its own code (3), as verifiers expect."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = USAGE_OR_IO
            raise


@click.command(cls=_VerifyCommand, epilog=VERIFY_EXITS)
@session_argument()
@click.option(
    "--keyring",
    type=click.Path(dir_okay=False),
    help="Trusted public keys (one 'key_id base64 [from [until]]' per line): checks the "
    "latest signed checkpoint (all of them with --all-checkpoints).",
)
@click.option(
    "--anchors",
    type=click.Path(dir_okay=False),
    help="A JSON-lines anchor file: detects rollback, truncation and equivocation.",
)
@click.option("--all-checkpoints", is_flag=True, help="Check every checkpoint's signature.")
@click.option(
    "--max-unsigned-tail",
    type=click.IntRange(min=0),
    help="Fail (exit 2) when more entries than this follow the last signed checkpoint "
    "(0: everything must be signed). Needs --keyring.",
)
@json_option("Print one object: the verification report (ok, entries, bad_seq, code, ...).")
def verify(
    session: tuple[str, ...],
    keyring: str | None,
    anchors: str | None,
    all_checkpoints: bool,
    max_unsigned_tail: int | None,
    as_json: bool,
) -> int:
    """Recompute the hash chain, the state and the artifact digests, and check the signed
    checkpoints beside them.

    Without --keyring, stored checkpoints must still match the chain, but their signatures
    are not checked. Exits 0 when everything checks, 1 naming the first bad seq when not
    (see the exit codes below).
    """
    try:
        name = _one(session)
        options = verify_options(keyring, False, max_unsigned_tail, anchors, all_checkpoints)
    except (CliError, KaizenValidationError) as exc:
        click.echo(f"kaizen: {exc.message if isinstance(exc, KaizenError) else exc}", err=True)
        return USAGE_OR_IO

    async def body() -> int:
        try:
            with progress_bar("verifying") as progress:
                async with open_source(name, progress=progress) as source:
                    checkpoints = await source.checkpoints()
                    checked = await source.verify()
                    core = await source.core()
                    records = core.records
                    report = check_checkpoints(
                        core.session_id,
                        checked,
                        lambda seq: records[seq - 1][HASH],
                        checkpoints,
                        options,
                    )
        except SessionCorruptedError as exc:
            if as_json:
                emit_json(
                    {
                        "ok": False,
                        "entries": None,
                        "bad_seq": exc.seq,
                        "code": exc.code.value,
                        "error": exc.message,
                    }
                )
            else:
                where = "" if str(name) in exc.message else f"{name}: "
                click.echo(f"FAILED ({exc.code.value}): {where}{exc.message}")
                if exc.seq is not None:
                    click.echo(f"first bad seq: {exc.seq}")
            return UNVERIFIABLE if exc.code in _UNVERIFIABLE else TAMPERED
        except Exception as exc:
            known = describe(exc)
            if known is None:
                raise
            click.echo(f"kaizen: {known[0]}", err=True)
            return USAGE_OR_IO
        if as_json:
            emit_json(
                {
                    "ok": True,
                    "bad_seq": None,
                    "code": None,
                    "error": None,
                    "head_hash": core.head,
                    "state_version": core.version,
                    **report.to_dict(),
                }
            )
        else:
            click.echo(
                f"ok: {name}: {checked} entries, hash chain intact (head "
                f"{short_hash(core.head)}), state version {core.version} matches replay, "
                f"{len(core.artifacts)} artifact(s) match their digests"
            )
            if report.signed:
                click.echo(
                    f"signed: up to seq {report.last_signed_seq} ({report.signatures_checked} "
                    f"signature(s) checked; keys {', '.join(report.key_ids)}; writers "
                    f"{', '.join(report.writers)}); unsigned tail {report.unsigned_tail}"
                )
            if report.rollback_checked:
                click.echo(f"anchors: consistent (newest anchored seq {report.anchored_seq})")
            for problem in report.problems:
                click.echo(f"note: {problem}")
        return VERIFIED

    return run(body)


def _artifact_rows(core: SessionCore) -> list[dict[str, Any]]:
    written: dict[str, int] = {}
    for record in core.records:
        if record[ENTRY_TYPE] == EntryType.ARTIFACT_WRITTEN.value:
            written[decode(record[CONTENT])["name"]] = record[SEQ]
    return [
        {
            "name": artifact,
            "size": len(core.blobs[digest]),
            "digest": digest,
            "written_at_seq": written.get(artifact),
        }
        for artifact, digest in sorted(core.artifacts.items())
    ]


@click.command(epilog=SESSION_HELP)
@session_argument()
@click.option("--get", "get_name", metavar="NAME", help="Write this artifact's bytes out.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Where --get writes (default: stdout).",
)
@json_option("Print each artifact as one JSON object per line.")
def artifacts(
    session: tuple[str, ...], get_name: str | None, output: str | None, as_json: bool
) -> int:
    """List a session's artifacts, or write one out with --get NAME [-o FILE]."""
    name = _one(session)
    if output is not None and get_name is None:
        raise click.UsageError("-o/--output needs --get NAME")

    async def body() -> int:
        async with open_source(name) as source:
            core = await source.core()
        if get_name is not None:
            if get_name not in core.artifacts:
                known = ", ".join(sorted(core.artifacts)) or "none"
                raise BadInput(f"{name} has no artifact {get_name!r} (it has: {known})")
            _write_out(core.read_artifact(get_name), output)
            return OK
        rows = _artifact_rows(core)
        if as_json:
            for row in rows:
                emit_json(row)
        else:
            table(
                ("NAME", "SIZE", "SEQ", "DIGEST"),
                [
                    [r["name"], str(r["size"]), str(r["written_at_seq"] or "-"), r["digest"]]
                    for r in rows
                ],
            )
        return OK

    return run(body)


def _write_out(data: bytes, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise IOFailure(f"cannot write {output}: {exc.strerror or exc}") from None
