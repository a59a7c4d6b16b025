"""``python -m shelfwise`` runs the CLI."""

from shelfwise.cli.main import main

main()
