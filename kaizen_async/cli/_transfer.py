"""``kaizen export`` and ``kaizen import``: move sessions between ``.kaizen`` files and stores.

An export writes the session exactly as it is: the same entries and hashes, no
``session_saved`` entry added (a ``Session.save`` would add one), so ``kaizen diff`` calls
the source and the export the same. A file is written to a temporary name and renamed
into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, cast

import click

from .._exceptions import SessionExistsError
from .._persistence import SavePlan, plan_save, write_session
from .._session import Session
from .._state import SCHEMA_VERSION, SessionCore
from ._common import SESSION_HELP, json_option, run, session_argument
from ._errors import OK, BadInput, Unavailable
from ._naming import SessionName, is_url, parse_session_names, parse_store_url
from ._output import emit_json, progress_bar
from ._sources import FileSource, open_source, store_for

__all__ = ["export", "import_", "plan_export"]


def plan_export(core: SessionCore, path: str, *, overwrite: bool = False) -> SavePlan:
    """What writing ``core`` as it stands to a file writes: its own last entry is the
    file's head (a save would add a ``session_saved`` entry and make that the head)."""
    head = core.records[-1]
    plan = plan_save(core, path, head, overwrite=overwrite)
    plan.records = core.records[:]
    return plan


@click.command(epilog=SESSION_HELP)
@session_argument()
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The .kaizen file to write.",
)
@click.option("-f", "--force", is_flag=True, help="Replace FILE if it exists.")
@json_option("Print one JSON object describing what was written.")
def export(session: tuple[str, ...], output: str, force: bool, as_json: bool) -> int:
    """Write a session (from a store, or a file) to a .kaizen file, verified on the way."""
    name = parse_session_names(session, count=1)[0]
    target = os.path.abspath(output)
    if name.path is not None and os.path.abspath(name.path) == target:
        raise BadInput(f"{output} is the session being exported: choose another file")
    if os.path.exists(target) and not force:
        raise BadInput(f"{output} exists; add --force to replace it")
    parent = Path(target).parent
    if not parent.is_dir():
        raise BadInput(f"cannot write {output}: no directory {parent}")

    async def body() -> int:
        with progress_bar("reading") as progress:
            async with open_source(name, progress=progress) as source:
                core = await source.core()
                facts = await source.facts()
        converted = isinstance(source, FileSource) and facts["schema_version"] != SCHEMA_VERSION
        if converted:
            # an original-Kaizen file: its artifacts are known only from its own table, so
            # it is converted the library's way (session_loaded carries the artifact map)
            async with Session.load(source.name.path or "") as loaded:
                await loaded.save(target, overwrite=force)
                entries = await loaded.get_trajectory_length()
        else:
            write_session(plan_export(core, target, overwrite=force))
            entries = len(core.records)
        report = {
            "source": str(name),
            "output": output,
            "session_id": core.session_id,
            "entries": entries,
            "state_version": core.version,
            "artifacts": len(core.artifacts),
            "converted_from_schema": facts["schema_version"] if converted else None,
        }
        if as_json:
            emit_json(report)
        else:
            how = " (converted from schema 1)" if converted else ""
            click.echo(
                f"exported {name} to {output}{how}: session {core.session_id}, "
                f"{entries} entries, state version {core.version}, "
                f"{len(core.artifacts)} artifact(s)"
            )
        return OK

    return run(body)


def _hub_class() -> type[Any]:
    try:
        module = importlib.import_module("kaizen_async")
        return cast("type[Any]", module.SessionHub)
    except (ImportError, AttributeError):
        raise Unavailable(
            "kaizen import is not available: it imports through SessionHub, which is not "
            "in this build of kaizen_async yet"
        ) from None


@click.command("import")
@click.argument("arguments", nargs=-1, required=True, metavar="FILE... URL")
@json_option("Print one JSON object per imported session.")
def import_(arguments: tuple[str, ...], as_json: bool) -> int:
    """Import .kaizen files into a store: kaizen import run.kaizen sqlite:///sessions.db

    Each file is verified first; it is stored under its own session id (an id the store
    holds already is an error) with a session_loaded entry, as SessionHub.import_file does.
    A missing database file is created.
    """
    if len(arguments) < 2 or not is_url(arguments[-1]):
        raise click.UsageError("expected FILE... URL: one or more .kaizen files, then a store URL")
    *paths, url_text = arguments
    url = parse_store_url(url_text)
    for path in paths:
        if is_url(path):
            raise click.UsageError(f"{path}: import reads .kaizen files (export reads stores)")
    hub_class = _hub_class()

    async def body() -> int:
        for path in paths:  # verified before anything is written
            with progress_bar(f"verifying {path}") as progress:
                async with open_source(SessionName(path=path), progress=progress):
                    pass
        # the hub enters (opens) its store itself
        store = store_for(url, create=True)
        async with hub_class(store) as hub:
            for path in paths:
                try:
                    session_id = await hub.import_file(path)
                except SessionExistsError as exc:
                    raise BadInput(f"{path}: {url} already holds this session ({exc})") from None
                info = await store.info(session_id)
                report = {
                    "file": path,
                    "store": str(url),
                    "session_id": session_id,
                    "entries": info.trajectory_length,
                    "state_version": info.state_version,
                }
                if as_json:
                    emit_json(report)
                else:
                    click.echo(
                        f"imported {path} into {url} as {session_id}: "
                        f"{info.trajectory_length} entries, state version {info.state_version}"
                    )
        return OK

    return run(body)
