"""One generator in a config: the bundle's generators, the feed blend and the pipeline's
candidates are all described by :class:`GeneratorSpec`."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shelfwise.retrieval.registry import GENERATORS


class GeneratorSpec(BaseModel):
    """A registered generator with its params, its blend weight and the candidates it adds
    (overall and among cold items).

    Names and params are checked against the registry when the config is read, so a typo fails
    before anything is fitted, naming the generator and the field."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered generator name (retrieval.registry.GENERATORS)")
    alias: str | None = Field(
        default=None, description="feature-name prefix and save folder; default: name. Needed "
        "to run one generator twice with different params")
    params: dict[str, Any] = Field(default_factory=dict, description="the generator's config")
    weight: float = Field(default=1.0, ge=0, description="heuristic-blend weight (the start "
                          "of tuning when weights are tuned)")
    required: bool = Field(
        default=True, description="False: skip (and record why) when the data cannot feed it")
    candidates: int | None = Field(
        default=None, ge=0, description="pipeline only: top-N this generator adds to the "
        "candidate set; None = candidates_per_generator; 0 = features only")
    cold_candidates: int | None = Field(
        default=None, ge=0, description="pipeline only: top-N of this generator among cold "
        "items (fewer than 5 training interactions, or posted after training) added to the "
        "candidate set besides its overall top-N, with their place among cold items as the "
        "feature <alias>_cold_rank; None or 0 = none")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in GENERATORS:
            raise ValueError(f"unknown generator {name!r}; known: {', '.join(sorted(GENERATORS))}")
        return name

    @model_validator(mode="after")
    def _params_ok(self) -> Self:
        try:
            GENERATORS[self.name].Config(**self.params)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                            for e in exc.errors())
            raise ValueError(f"params of generator {self.name!r}: {bad}") from None
        return self

    @property
    def key(self) -> str:
        """How the bundle, the blend and the pipeline's features refer to this generator."""
        return self.alias or self.name

    def same_model(self, other: GeneratorSpec) -> bool:
        """True when both specs fit the same model (weights and candidate counts aside)."""
        return self.name == other.name and self.params == other.params
