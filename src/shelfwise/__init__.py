"""shelfwise: a self-hosted recommendation and personalized-search engine for online shops."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shelfwise.config import ShelfwiseConfig
    from shelfwise.services.engine import Engine

__version__ = "0.1.0"

__all__ = ["__version__", "open"]


def open(store: str | None = None, bundle: Path | str | None = None, *,
         config: ShelfwiseConfig | Path | str | None = None) -> Engine:
    """The engine over ``store`` (a URL) and ``bundle`` (a bundle or bundles directory), as
    the server runs it: ``engine.feed(user)``, ``engine.search(query, user_id=...)``,
    ``engine.similar(item)``, ``engine.cart(items)``, ``engine.track(events)``,
    ``engine.forget_user(user)``; user ids are your own (pseudonymized inside when
    ``[privacy] pseudonymize`` is on). ``config`` is a
    :class:`~shelfwise.config.ShelfwiseConfig` or the path of its TOML; close the engine (or
    use it in a ``with`` block) to store its queued impressions."""
    from shelfwise.config import ShelfwiseConfig, load_config
    from shelfwise.services.engine import Engine

    cfg = config if isinstance(config, ShelfwiseConfig) else load_config(config).config
    if store is not None:
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"url": store})})
    return Engine(cfg, bundle_path=bundle)
