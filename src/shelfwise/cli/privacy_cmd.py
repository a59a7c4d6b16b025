"""``shelfwise forget-user ID`` and ``shelfwise retention apply``: erasure and retention on the
store directly (no bundle, no server needed).

A server running elsewhere on the same store notices a forgotten user through the store's
tombstone within ``[privacy] sync_seconds`` and drops them from its memory; what it had queued
for them is refused by the store. The bundle never held per-user state; its aggregate
statistics count the user's past events until the next ``shelfwise train``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from shelfwise.cli.common import ConfigOpt, SetOpt, StoreOpt, resolve_config
from shelfwise.exceptions import ShelfwiseError
from shelfwise.privacy.erasure import retention_cutoff
from shelfwise.storage import open_store

retention_app = typer.Typer(help="Drop events older than storage.retention_days.",
                            no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    msg = str(exc) if isinstance(exc, ShelfwiseError) else str(exc).splitlines()[0]
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def forget_user(
    user_id: Annotated[str, typer.Argument(help="the user's id as your shop sends it")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: StoreOpt = None,
    stored: Annotated[bool, typer.Option(
        "--stored-id", help="USER_ID is already the stored form (a pu_… pseudonym)")] = False,
) -> None:
    """Forget a user: delete their events of every type, their user row and every stored row
    naming them, in one transaction, and print what was removed. Servers on the same store
    drop the user from memory within privacy.sync_seconds."""
    try:
        cfg = resolve_config(config, set_, {"storage.url": ("--store", store)}).config
        pseudonyms = None if stored else cfg.privacy.pseudonymizer()
        key = user_id if pseudonyms is None else pseudonyms(user_id)
        db = open_store(cfg.storage.url)
        try:
            done = db.forget_user(key)
        finally:
            db.close()
    except (ShelfwiseError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    kinds = ", ".join(f"{t} {n}" for t, n in done.events.items()) or "none"
    rows = ", ".join(f"{t} {n}" for t, n in done.rows.items())
    typer.echo(f"forgot {user_id}: rows deleted per table: {rows}; events by type: {kinds}")
    typer.echo(f"servers on this store drop the user from memory within "
               f"{cfg.privacy.sync_seconds:g} s (privacy.sync_seconds); run `shelfwise train` "
               "to remove their share of the bundle's aggregate statistics")


@retention_app.command("apply")
def retention_apply(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: StoreOpt = None,
    days: Annotated[float | None, typer.Option(
        min=0.0, help="keep this many days instead of storage.retention_days")] = None,
) -> None:
    """Delete events older than the retention period now (a server also does it on its own
    schedule when storage.retention_days is set)."""
    try:
        cfg = resolve_config(config, set_, {"storage.url": ("--store", store),
                                            "storage.retention_days": ("--days", days)}).config
        keep = cfg.storage.retention_days
        if keep is None:
            raise ShelfwiseError("no retention period: set storage.retention_days or --days")
        cutoff = retention_cutoff(keep)
        db = open_store(cfg.storage.url)
        try:
            n = db.drop_events_before(cutoff)
        finally:
            db.close()
    except (ShelfwiseError, SQLAlchemyError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"deleted {n} events older than {cutoff:%Y-%m-%d %H:%M:%S} UTC ({keep:g} days)")


def register(app: typer.Typer) -> None:
    """Add ``forget-user`` and ``retention apply`` to the shelfwise app."""
    app.command("forget-user")(forget_user)
    app.add_typer(retention_app, name="retention")
