"""``[serve.dashboard]``: the merchandiser's web pages under ``/dashboard``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DashboardConfig(BaseModel):
    """The dashboard (admin key or a login backed by one; see ``shelfwise.dashboard``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="serve /dashboard")
    results: list[str] = Field(
        default_factory=list, description="offline evaluation results to plot: files or "
        "folders of `shelfwise evaluate --out` JSON lines and benchmark result JSON; the "
        "evaluation.jsonl beside the bundles folder (as `shelfwise demo` writes it) is "
        "always read")
    refresh_seconds: float = Field(default=10.0, gt=0, description="how often the event "
                                   "totals over time and the events-per-minute rate are "
                                   "brought up to date (by arrival order: cheap)")
    recount_minutes: float = Field(default=30.0, gt=0, description="how often totals are "
                                   "recounted in full (forgotten users, retention) and new "
                                   "users per day counted")
    report_seconds: float = Field(default=60.0, ge=0, description="experiment reports and "
                                  "off-policy estimates are reused this long")
