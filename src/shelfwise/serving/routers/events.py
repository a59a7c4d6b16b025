"""``/v1/events`` and ``/v1/users``: what shoppers did, and who they are."""

from __future__ import annotations

from fastapi import APIRouter

from shelfwise.apikeys import Scope
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import EngineDep, ModelRoute
from shelfwise.serving.schemas import EventBatch, EventsAccepted, UserBatch, Written

router = APIRouter(prefix="/v1", tags=["feedback"], dependencies=[requires(Scope.INGEST)],
                   route_class=ModelRoute)


@router.post("/events", response_model=EventsAccepted)
def post_events(batch: EventBatch, engine: EngineDep) -> EventsAccepted:
    """Store a batch durably (all or nothing) before answering, then refresh the users' state
    and every learner subscribed to events."""
    return engine.track(batch.events)


@router.post("/users", response_model=Written)
def post_users(batch: UserBatch, engine: EngineDep) -> Written:
    return Written(written=engine.add_users(batch.users).written)
