"""``shelfwise config show|check``: the effective configuration and where each value is from."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

from shelfwise.cli.common import ConfigOpt, SetOpt, resolve_config
from shelfwise.config import LoadedConfig, ShelfwiseConfig, _inner_model
from shelfwise.exceptions import ShelfwiseError

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (inline tables for mappings; None has no TOML form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()
                          if v is not None)
        return "{" + inner + "}" if inner else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _source(loaded: LoadedConfig, key: str) -> str:
    found = {s for k, s in loaded.sources.items() if k == key or k.startswith(key + ".")}
    return found.pop() if len(found) == 1 else ", ".join(sorted(found)) or "default"


def render(loaded: LoadedConfig) -> str:
    """The effective config as TOML that reads back to the same config, each key followed by
    a comment naming where its value came from (default, the file, env, a flag)."""
    lines: list[str] = []

    def table(model: type[BaseModel], data: dict[str, Any], prefix: str) -> None:
        subs = []
        for name, fld in model.model_fields.items():
            value, key = data.get(name), f"{prefix}{name}"
            sub = _inner_model(fld.annotation)
            if sub is not None and isinstance(value, dict):
                subs.append((sub, value, key))
            elif value is None:
                lines.append(f"# {name}: not set  # {_source(loaded, key)}")
            elif sub is not None and isinstance(value, list):
                lines.append(f"{name} = [  # {_source(loaded, key)}")
                lines.extend(f"  {toml_value(v)}," for v in value)
                lines.append("]")
            else:
                lines.append(f"{name} = {toml_value(value)}  # {_source(loaded, key)}")
        for sub, value, key in subs:
            lines.append("")
            lines.append(f"[{key}]")
            table(sub, value, key + ".")

    data = loaded.config.model_dump(mode="json")
    for name, fld in ShelfwiseConfig.model_fields.items():
        model = _inner_model(fld.annotation)
        assert model is not None
        lines.append(f"[{name}]")
        table(model, data[name], name + ".")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _resolve(config: Path | None, sets: list[str] | None) -> LoadedConfig:
    try:
        return resolve_config(config, sets)
    except ShelfwiseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Show or check the effective configuration.",
                        no_args_is_help=True)
    app.add_typer(group, name="config")

    @group.command("show")
    def show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
        """Print the effective config as TOML, each value with where it came from."""
        loaded = _resolve(config, set_)
        typer.echo(f"# effective shelfwise config (file: {loaded.path or 'none'}; bundle hash "
                   f"{loaded.config.bundle_hash()})")
        typer.echo(render(loaded), nl=False)

    @group.command("check")
    def check(config: ConfigOpt = None, set_: SetOpt = None) -> None:
        """Validate the config; exit 2 with every problem named when it is bad."""
        loaded = _resolve(config, set_)
        typer.echo(f"config ok ({loaded.path or 'defaults'}; bundle hash "
                   f"{loaded.config.bundle_hash()})")
