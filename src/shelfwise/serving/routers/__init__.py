"""One router per resource; each is a thin layer over :class:`~shelfwise.services.engine.Engine`."""

from shelfwise.serving.routers import (
    cart,
    events,
    experiments,
    items,
    privacy,
    promotions,
    search,
    system,
    users,
)

ROUTERS = (system.router, users.router, items.router, events.router, promotions.router,
           search.router, cart.router, privacy.router, experiments.router)

__all__ = ["ROUTERS"]
