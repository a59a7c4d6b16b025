"""``/v1/experiments``: A/B tests inside the engine (admins only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from shelfwise.apikeys import Scope
from shelfwise.experiments.model import Experiment, ExperimentIn
from shelfwise.serving.auth import requires
from shelfwise.serving.deps import EngineDep, ModelRoute

router = APIRouter(prefix="/v1", tags=["experiments"], dependencies=[requires(Scope.ADMIN)],
                   route_class=ModelRoute)
ExperimentPath = Annotated[str, Path(min_length=1, max_length=128,
                                     pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


@router.post("/experiments", response_model=Experiment, status_code=201)
def create_experiment(spec: ExperimentIn, engine: EngineDep) -> Experiment:
    """Define an experiment (variants of config overrides with traffic shares, the surfaces
    it targets); it assigns no traffic until started. 409 if the id exists."""
    return engine.experiments.create(spec)


@router.get("/experiments", response_model=list[Experiment])
def list_experiments(engine: EngineDep) -> list[Experiment]:
    return engine.experiments.all()


@router.get("/experiments/{experiment_id}", response_model=Experiment)
def get_experiment(experiment_id: ExperimentPath, engine: EngineDep) -> Experiment:
    return engine.experiments.get(experiment_id)


@router.post("/experiments/{experiment_id}/start", response_model=Experiment)
def start_experiment(experiment_id: ExperimentPath, engine: EngineDep) -> Experiment:
    """Start assigning traffic (every worker within ``[serve.experiments] sync_seconds``);
    409 if a running experiment on a shared surface changes the same setting."""
    return engine.experiments.start(experiment_id)


@router.post("/experiments/{experiment_id}/stop", response_model=Experiment)
def stop_experiment(experiment_id: ExperimentPath, engine: EngineDep) -> Experiment:
    """Stop assigning traffic; the report keeps covering the experiment's period."""
    return engine.experiments.stop(experiment_id)


@router.get("/experiments/{experiment_id}/report")
def experiment_report(experiment_id: ExperimentPath, engine: EngineDep) -> dict[str, Any]:
    """Per variant: users, impressions, CTR, add-to-cart rate, conversion and revenue per
    user with intervals; differences to control with p-values (CUPED for revenue), an
    always-valid sequential p-value, the sample-ratio check and a one-sentence verdict."""
    return engine.experiment_report(experiment_id).to_record()
