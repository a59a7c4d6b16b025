"""Experiments as data: variants of config overrides, traffic shares, sticky assignment.

An experiment is a JSON document in the store (``experiments`` table), so every worker and the
CLI see the same definitions. A unit (a user id as stored, or ``anon:<session>``) is assigned by
a salted hash: ``sha256(salt, unit)`` read as a number in [0, 1) falls into one variant's share.
The same unit always gets the same variant of one experiment (sticky, no state kept), shares
are met in expectation (uniform hash), and two experiments with different salts assign
independently.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shelfwise.data.schemas import ID_PATTERN

ExperimentSurface = Literal["feed", "similar", "search", "cart"]
SURFACES: tuple[ExperimentSurface, ...] = ("feed", "similar", "search", "cart")
Status = Literal["draft", "running", "stopped"]
_CART_KEYS = ("cooccurrence", "sequential", "user_cooccurrence", "user_repeat", "popularity")


class Overrides(BaseModel):
    """What a variant changes for the requests assigned to it (unset: the server's config).

    An explicit request parameter (``diversity``, ``explore``) still wins over the variant: a
    shop that asks for a value gets it; experiments act on the defaults."""

    model_config = ConfigDict(extra="forbid")

    bundle: str | None = Field(default=None, description="a published bundle version to serve "
                               "this variant from (the server loads it beside its own)")
    pipeline: bool | None = Field(default=None, description="feed: false serves the blend "
                                  "instead of the two-stage pipeline")
    diversity: float | None = Field(default=None, ge=0, le=1,
                                    description="the diversity knob's default")
    explore: int | None = Field(default=None, ge=0, le=20,
                                description="feed exploration slots")
    search_ranker: bool | None = Field(default=None, description="search: false returns the "
                                       "fused retrieval order without the learned ranker")
    cart: dict[str, float] | None = Field(default=None, description="cart signal weights "
                                          f"({', '.join(_CART_KEYS)})")

    @field_validator("cart")
    @classmethod
    def _cart_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        for key, weight in value.items():
            if key not in _CART_KEYS:
                raise ValueError(f"unknown cart weight {key!r}; known: {', '.join(_CART_KEYS)}")
            if not 0 <= weight < float("inf"):
                raise ValueError(f"cart weight {key!r} = {weight}: use a finite number >= 0")
        return value

    def keys(self) -> set[str]:
        """The settings this variant changes."""
        return {k for k, v in self.model_dump().items() if v is not None}


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    share: float = Field(gt=0, le=1, description="fraction of the experiment's traffic")
    overrides: Overrides = Field(default_factory=Overrides)


class ExperimentIn(BaseModel):
    """What ``POST /v1/experiments`` takes."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    name: str = ""
    description: str = ""
    variants: list[Variant] = Field(min_length=2, max_length=20)
    control: str | None = Field(default=None, description="the variant the others are "
                                "compared with (default: the first)")
    surfaces: list[ExperimentSurface] = Field(default_factory=lambda: list(SURFACES),
                                              min_length=1)
    salt: str | None = Field(default=None, max_length=128,
                             description="hash salt (default: the id); a new salt reshuffles")
    layer: str | None = Field(default=None, max_length=128, description=(
        "a layer name: experiments of one layer with disjoint layer_range never share a "
        "unit, so they may change the same setting at the same time"))
    layer_range: tuple[float, float] = Field(default=(0.0, 1.0), description=(
        "the part [lo, hi) of the layer's units enrolled (by a hash of the layer name; "
        "without a layer, of the id); the rest is served as if the experiment did not exist"))
    mde: float = Field(default=0.05, gt=0, le=10, description="relative minimum detectable "
                       "effect the sample size is planned for (0.05 = +5%)")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0.5, lt=1)
    cuped_days: float = Field(default=14, ge=0, le=365, description="days before the start "
                              "whose behaviour is the CUPED covariate (0: off)")

    @model_validator(mode="after")
    def _check(self) -> ExperimentIn:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: two variants have the same name")
        total = sum(v.share for v in self.variants)
        if abs(total - 1) > 1e-6:
            raise ValueError(f"variants: shares sum to {total:g}; make them sum to 1")
        if self.control is None:
            self.control = names[0]
        elif self.control not in names:
            raise ValueError(f"control: {self.control!r} is not one of the variants "
                             f"({', '.join(names)})")
        if len(set(self.surfaces)) != len(self.surfaces):
            raise ValueError("surfaces: a surface is listed twice")
        lo, hi = self.layer_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"layer_range: [{lo}, {hi}) is not a part of [0, 1)")
        return self


class Experiment(ExperimentIn):
    """An experiment with its state (what the store keeps and the API returns)."""

    status: Status = "draft"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    stopped_at: datetime | None = None

    @property
    def key(self) -> str:
        return self.salt or self.id

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def enrolled(self, unit: str) -> bool:
        """Whether the unit falls into the experiment's part of its layer."""
        lo, hi = self.layer_range
        if lo == 0 and hi == 1:
            return True
        return lo <= unit_hash(f"layer:{self.layer or self.id}", unit) < hi

    def overlaps(self, other: Experiment) -> bool:
        """Whether some unit could be in both (false only for disjoint parts of one layer)."""
        if self.layer is None or self.layer != other.layer:
            return True
        (a, b), (c, d) = self.layer_range, other.layer_range
        return a < d and c < b

    def assign(self, unit: str) -> Variant:
        """The unit's variant: sticky, uniform over shares, independent across salts."""
        return self.variants[bucket(self.key, unit, [v.share for v in self.variants])]

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def unit_hash(salt: str, unit: str) -> float:
    """``sha256(salt, unit)`` as a number in [0, 1)."""
    digest = hashlib.sha256(f"{salt}\x1f{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def bucket(salt: str, unit: str, shares: list[float]) -> int:
    """Which share ``unit`` falls into."""
    u = unit_hash(salt, unit)
    acc = 0.0
    for k, share in enumerate(shares):
        acc += share
        if u < acc:
            return k
    return len(shares) - 1
