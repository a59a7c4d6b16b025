"""The ``shelfwise`` command."""

from __future__ import annotations

import typer

from shelfwise import __version__
from shelfwise.cli import (
    config_cmd,
    demo_cmd,
    evaluate_cmd,
    experiment_cmd,
    export_cmd,
    finetune_cmd,
    import_cmd,
    keys_cmd,
    policy_cmd,
    privacy_cmd,
    serve_cmd,
    train_cmd,
)

app = typer.Typer(
    name="shelfwise",
    help="Recommendations and personalized search for online shops.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("version")
def version() -> None:
    """Print the shelfwise version."""
    typer.echo(__version__)


for _module in (import_cmd, train_cmd, evaluate_cmd, finetune_cmd, policy_cmd, serve_cmd, demo_cmd,
                config_cmd, keys_cmd, privacy_cmd, export_cmd, experiment_cmd):
    _module.register(app)


def main() -> None:
    app()
