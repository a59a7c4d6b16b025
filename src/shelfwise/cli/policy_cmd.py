"""``shelfwise evaluate-policy``: off-policy evaluation of a bandit policy on a logged CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from shelfwise.exceptions import ConfigError, ShelfwiseError
from shelfwise.policies import (
    BanditLog,
    LogisticRewardModel,
    RewardModel,
    RidgeRewardModel,
    empirical_action_distribution,
    evaluate_policy,
    load_policy,
    make_estimator,
    make_policy,
)
from shelfwise.policies.offline import policy_distribution, train_on_head
from shelfwise.policies.ope import ESTIMATORS, INTERVALS, RECOMMENDED_ESTIMATOR, IntervalMethod


def parse_params(pairs: list[str], as_json: str | None) -> dict[str, Any]:
    """``key=value`` pairs (values parsed as JSON when they can be) merged over a JSON object."""
    params: dict[str, Any] = json.loads(as_json) if as_json else {}
    if not isinstance(params, dict):
        raise ConfigError("--params must be a JSON object")
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects key=value, got {pair!r}")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


def read_log(path: Path, columns: list[str]) -> pd.DataFrame:
    """The CSV with the named columns present (names in the error when one is missing)."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; "
                          f"has {', '.join(map(str, frame.columns))}")
    return frame


def feature_columns(frame: pd.DataFrame, features: str | None, prefix: str | None) -> list[str]:
    cols = [c.strip() for c in features.split(",") if c.strip()] if features else []
    if prefix:
        cols += [c for c in frame.columns if str(c).startswith(prefix) and c not in cols]
    return cols


def arm_codes(*series: pd.Series) -> tuple[list[np.ndarray], list[str]]:
    """Arm indices for each series: integer columns are used as they are, anything else (e.g.
    promotion ids) is mapped to 0..k-1 in sorted order over all the series."""
    if all(pd.api.types.is_integer_dtype(s) for s in series):
        return [s.to_numpy(np.int64) for s in series], []
    labels = sorted({str(v) for s in series for v in s})
    index = {label: i for i, label in enumerate(labels)}
    return [s.astype(str).map(index).to_numpy(np.int64) for s in series], labels


def _reward_model(name: str, n_actions: int) -> RewardModel | None:
    if name == "auto":
        return None  # evaluate_policy picks by the rewards (default_reward_model)
    if name == "ridge":
        return RidgeRewardModel(n_actions=n_actions)
    if name == "logistic":
        return LogisticRewardModel(n_actions=n_actions)
    raise ConfigError(f"unknown reward model {name!r}: use auto, ridge or logistic")


def _interval(name: str, bootstrap: str) -> IntervalMethod | None:
    if name == "default":
        return None
    for method in INTERVALS:
        if name == method:
            if bootstrap == "refit" and method != "bootstrap":
                raise ConfigError("--bootstrap refit makes bootstrap intervals; use --interval "
                                  "default or bootstrap")
            return method
    raise ConfigError(f"--interval must be default or one of {', '.join(INTERVALS)}")


def recommendation(table: pd.DataFrame, level: str) -> str:
    """One sentence naming the recommended estimate, or saying it was not computed."""
    rows = table[table["estimator"] == RECOMMENDED_ESTIMATOR]
    if rows.empty:
        return (f"recommended estimator {RECOMMENDED_ESTIMATOR} was not among --estimators "
                f"(known: {', '.join(ESTIMATORS)})")
    row = rows.iloc[0]
    return (f"recommended: {RECOMMENDED_ESTIMATOR} = {row['value']:.6g}, {level} interval "
            f"[{row['lower']:.6g}, {row['upper']:.6g}] ({row['interval']}; the estimator whose "
            f"intervals were calibrated in simulation: benchmarks/bench_ope_intervals.py)")


def register(app: typer.Typer) -> None:
    @app.command("evaluate-policy")
    def evaluate_policy_command(
        log_csv: Annotated[Path, typer.Argument(help="logged bandit CSV, one row per decision")],
        features: Annotated[str | None, typer.Option(
            help="comma-separated context columns")] = None,
        feature_prefix: Annotated[str | None, typer.Option(
            help="also use every column starting with this")] = None,
        action_col: Annotated[str, typer.Option(help="logged arm (index or id)")] = "action",
        reward_col: Annotated[str, typer.Option(help="observed reward")] = "reward",
        propensity_col: Annotated[str, typer.Option(
            help="logging policy's probability of the logged arm")] = "propensity",
        position_col: Annotated[str | None, typer.Option(
            help="slot of the impression (π_e is read per slot)")] = None,
        policy: Annotated[str | None, typer.Option(
            help="policy to evaluate: uniform | egreedy | linucb | thompson")] = None,
        param: Annotated[list[str] | None, typer.Option(
            help="policy hyperparameter key=value (repeatable)")] = None,
        params: Annotated[str | None, typer.Option(help="policy hyperparameters as JSON")] = None,
        train_fraction: Annotated[float, typer.Option(
            help="first part of the log (file order) that trains --policy; the rest is "
                 "evaluated. 0 = evaluate the untrained policy on all rows")] = 0.5,
        load: Annotated[Path | None, typer.Option(
            "--load-policy", help="evaluate a saved policy directory")] = None,
        save: Annotated[Path | None, typer.Option(
            "--save-policy", help="save the trained policy here")] = None,
        target_log: Annotated[Path | None, typer.Option(
            help="evaluate the policy that wrote this log (its per-slot action frequencies)")
        ] = None,
        estimators: Annotated[str, typer.Option(help="comma-separated")] = (
            "ips,snips,dm,dr,switch-dr,dr-os"),
        reward_model: Annotated[str, typer.Option(
            help="q̂ for DM/DR: auto (logistic for 0/1 rewards, else ridge) | ridge | logistic")
        ] = "auto",
        interval: Annotated[str, typer.Option(
            help="default (each estimator's calibrated one: analytic for IPS/SNIPS/DR, hull "
                 "for DM/Switch-DR/DR-os) | analytic | bootstrap | hull")] = "default",
        n_bootstrap: Annotated[int, typer.Option(min=0, help="resamples of a bootstrap "
                                                 "interval")] = 1000,
        alpha: Annotated[float, typer.Option(help="1 - confidence level")] = 0.05,
        bootstrap: Annotated[str, typer.Option(
            help="rows (q̂ fixed) | refit (q̂ refitted per replicate; bootstrap intervals)")
        ] = "rows",
        seed: Annotated[int, typer.Option()] = 0,
        out: Annotated[Path | None, typer.Option(help="append JSON-lines records here")] = None,
    ) -> None:
        """Estimate a policy's value on a logged-bandit CSV with IPS, SNIPS, DM, DR, Switch-DR
        and DR-os, each with a confidence interval; the recommended estimate (the one whose
        95% intervals were calibrated in simulation) is named on the last line."""
        console = Console(stderr=True)
        try:
            if sum(x is not None for x in (policy, load, target_log)) != 1:
                raise ConfigError("give exactly one of --policy, --load-policy, --target-log")
            base_cols = [action_col, reward_col, propensity_col]
            base_cols += [position_col] if position_col else []
            frame = read_log(log_csv, base_cols)
            ctx_cols = feature_columns(frame, features, feature_prefix)
            frame = read_log(log_csv, base_cols + ctx_cols) if ctx_cols else frame
            target = read_log(target_log, [action_col] + ([position_col] if position_col
                                                          else [])) if target_log else None
            codes, labels = arm_codes(frame[action_col],
                                      *([target[action_col]] if target is not None else []))
            pos = frame[position_col].to_numpy(np.int64) if position_col else None
            contexts = frame[ctx_cols].to_numpy(np.float64) if ctx_cols else None
            n_actions = int(max(c.max() for c in codes)) + 1
            loaded = load_policy(load) if load is not None else None
            if loaded is not None:
                n_actions = max(n_actions, loaded.n_actions)
            full = BanditLog.from_arrays(codes[0], frame[reward_col], frame[propensity_col],
                                         contexts=contexts, positions=pos, n_actions=n_actions)
            if target is not None:
                tpos = target[position_col].to_numpy(np.int64) if position_col else None
                tlog = BanditLog.from_arrays(codes[1], np.zeros(len(codes[1])),
                                             np.ones(len(codes[1])), positions=tpos,
                                             n_actions=n_actions)
                log, dist = full, empirical_action_distribution(tlog)
                what = f"the policy that wrote {Path(str(target_log)).name}"
            else:
                if loaded is None:
                    assert policy is not None
                    loaded = make_policy(policy, n_actions=n_actions,
                                         **parse_params(param or [], params))
                    log = train_on_head(loaded, full, train_fraction)
                else:
                    log = full
                dist = policy_distribution(loaded, log, seed)
                what = f"policy {loaded.name} ({full.n_rounds - log.n_rounds} rows trained)"
                if save is not None:
                    loaded.save(save)
            ests = [make_estimator(e.strip()) for e in estimators.split(",") if e.strip()]
            if bootstrap not in ("rows", "refit"):
                raise ConfigError("--bootstrap must be rows or refit")
            method = _interval(interval, bootstrap)
            table = evaluate_policy(log, dist, ests,
                                    reward_model=_reward_model(reward_model, n_actions),
                                    n_bootstrap=n_bootstrap, alpha=alpha, seed=seed,
                                    bootstrap="refit" if bootstrap == "refit" else "rows",
                                    interval=method)
        except (ShelfwiseError, ValueError, OSError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        level = f"{100 * (1 - alpha):g}%"
        slots = f", {log.n_positions} slots" if pos is not None else ""
        typer.echo(f"evaluating {what} on {log.n_rounds} logged rows of {log_csv.name} "
                   f"({n_actions} arms{slots}); logged policy's own mean reward "
                   f"{log.rewards.mean():.6g}")
        if labels:
            typer.echo("arms: " + ", ".join(f"{i}={lab}" for i, lab in enumerate(labels)))
        shown = table.copy()
        shown.insert(3, "ci", [f"{level} [{lo:.6g}, {hi:.6g}]"
                               for lo, hi in zip(table["lower"], table["upper"], strict=True)])
        cols = ["estimator", "value", "ci", "interval"] + [
            c for c in table.columns if c.startswith("param_")]
        typer.echo(shown[cols].to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        typer.echo(recommendation(table, level))
        if out is not None:
            with out.open("a") as fh:
                for rec in table.to_dict(orient="records"):
                    rec = {k: v for k, v in rec.items() if not (isinstance(v, float) and
                                                                 np.isnan(v))}
                    fh.write(json.dumps({"log": str(log_csv), "policy": what, **rec}) + "\n")
            typer.echo(f"records appended to {out}")
