"""``shelfwise keys create|list|revoke``: the API keys that guard ``shelfwise serve``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shelfwise.apikeys import PREFIX, Scope, create_key, revoke_key
from shelfwise.cli.common import ConfigOpt, SetOpt, StoreOpt, opened_store

SCOPES_HELP = ("admin: everything (catalog, promotions, deletion, config, metrics); ingest: "
               "events and users; read: feed, search, similar, cart, profile, choosing "
               "promotions")


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Create, list and revoke API keys (kept hashed in the store).",
                        no_args_is_help=True)
    app.add_typer(group, name="keys")

    @group.command("create")
    def create(
        scope: Annotated[Scope, typer.Option(help=SCOPES_HELP)],
        name: Annotated[str, typer.Option(help="what the key is for, e.g. storefront")] = "",
        config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None,
    ) -> None:
        """Create a key; it is printed once, alone on the last line (only its hash is kept)."""
        with opened_store(config, set_, store) as opened:
            key, raw = create_key(opened, scope, name)
        typer.echo(f"created key {key.id} (scope {key.scope}{f', name {name}' if name else ''})"
                   "; it is shown only now. Send it as 'Authorization: Bearer <key>':")
        typer.echo(raw)

    @group.command("list")
    def list_(
        all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
        config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None,
    ) -> None:
        """List keys: id, name, scope, created, the key's last characters (never the key)."""
        with opened_store(config, set_, store) as opened:
            keys = opened.list_api_keys(revoked=all_)
        if not keys:
            typer.echo("no API keys: a server on loopback is open to all (local mode); "
                       "create one with shelfwise keys create --scope admin")
            return
        table = Table("id", "name", "scope", "created (UTC)", "key", *(["revoked"] * all_))
        for k in keys:
            table.add_row(k.id, escape(k.name), k.scope, _when(k.created_at),
                          f"{PREFIX}…{k.hint}", *([_when(k.revoked_at)] * all_))
        Console(width=120).print(table)

    @group.command("revoke")
    def revoke(
        key_id: Annotated[str, typer.Argument(metavar="ID", help="the key's id (keys list)")],
        config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None,
    ) -> None:
        """Revoke a key: servers refuse it within serve.auth.cache_seconds (default 5 s)."""
        with opened_store(config, set_, store) as opened:
            key = revoke_key(opened, key_id)
        typer.echo(f"revoked key {key.id} (scope {key.scope}); servers refuse it within "
                   "serve.auth.cache_seconds")
