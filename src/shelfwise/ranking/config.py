"""The feed pipeline's declarative config: which generators feed the ranker, and how.

One TOML (or dict) names each generator with its params, the candidates it contributes, the
ranker's hyperparameters and when to fall back to the heuristic blend. Generator names and
params are checked against the registry at load, so a typo fails before any fitting, with the
field and generator named. :meth:`PipelineConfig.config_hash` keys caches and bundles.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shelfwise.exceptions import ConfigError, describe_validation_error
from shelfwise.ranking.ranker import LambdaMARTConfig
from shelfwise.retrieval.spec import GeneratorSpec

__all__ = ["GeneratorSpec", "PipelineConfig"]


class PipelineConfig(BaseModel):
    """Generators → candidates → features → LambdaMART (or the heuristic blend)."""

    model_config = ConfigDict(extra="forbid")

    generators: list[GeneratorSpec] = Field(min_length=1)
    candidates_per_generator: int = Field(default=50, ge=1)
    ranker: LambdaMARTConfig = Field(default_factory=LambdaMARTConfig)
    min_groups: int = Field(
        default=200, ge=1, description="fewer training groups (held-out users whose target is "
        "among their candidates) than this: serve the heuristic blend instead of a ranker")
    max_train_users: int | None = Field(
        default=20_000, ge=1, description="held-out users sampled to train the ranker")
    exclude_seen: bool = Field(default=True, description="candidates skip the user's history")
    tune_blend: bool = Field(default=True, description="tune blend weights on held-out users")
    blend_tuning_users: int = Field(default=1000, ge=1)
    recent_days: float = Field(default=30.0, gt=0, description="window of pop_recent")
    drop_features: list[str] = Field(default_factory=list,
                                     description="feature names the ranker must not use")
    cold_boost: float = Field(
        default=0.0, ge=0, description="added to the ranker's score of cold candidates (fewer "
        "than 5 training interactions, or posted after training), in the ranker's score units: "
        "trades accuracy on warm targets for cold ones; choose it on validation")
    cold_words: int = Field(
        default=0, ge=0, description="top-N cold items (as for cold_boost) whose text shares "
        "the most words with the user's last 10 items, added to the candidates, with their "
        "place as the feature lex_cold_rank (items need text); 0 = none")
    batch_size: int = Field(default=1024, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        keys = [g.key for g in self.generators]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"generators: {', '.join(dup)} appear more than once; give each "
                             "copy its own alias")
        if not any(self.candidates_of(g) > 0 for g in self.generators):
            raise ValueError("generators: every generator has candidates = 0; at least one "
                             "must contribute candidates")
        return self

    def candidates_of(self, spec: GeneratorSpec) -> int:
        return self.candidates_per_generator if spec.candidates is None else spec.candidates

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "pipeline config") -> Self:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(f"{source} is invalid:\n{describe_validation_error(exc)}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Self:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"pipeline config {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p} is not valid TOML: {exc}") from None
        return cls.from_dict(raw.get("pipeline", raw), source=str(p))

    def config_hash(self) -> str:
        """Stable short hash of the whole config (key of caches and bundles)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
