"""``shelfwise experiment create|list|start|stop|report|replay``: A/B tests on the store."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from shelfwise.cli.common import ConfigOpt, SetOpt, StoreOpt, opened_store
from shelfwise.exceptions import InvalidRequestError, describe_validation_error
from shelfwise.experiments.model import ExperimentIn
from shelfwise.experiments.service import ExperimentService

IdArg = Annotated[str, typer.Argument(help="the experiment id")]


def _read_spec(path: Path) -> ExperimentIn:
    try:
        text = path.read_text()
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return ExperimentIn(**data)
    except OSError as exc:
        raise InvalidRequestError(f"{path}: {exc.strerror}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequestError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: "
                                  f"{exc}") from None
    except ValidationError as exc:
        raise InvalidRequestError(f"{path}: the experiment is not valid:\n"
                                  f"{describe_validation_error(exc)}") from None


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Online A/B experiments: define, start, stop, read the report.",
                        no_args_is_help=True)
    app.add_typer(group, name="experiment")

    @group.command("create")
    def create(
        spec: Annotated[Path, typer.Argument(help="the experiment as JSON or TOML (id, "
                                             "variants with share and overrides, surfaces)")],
        start: Annotated[bool, typer.Option(help="start it at once")] = False,
        config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None,
    ) -> None:
        """Define an experiment (a draft until started)."""
        with opened_store(config, set_, store) as opened:
            service = ExperimentService(opened)
            exp = service.create(_read_spec(spec))
            if start:
                exp = service.start(exp.id)
        typer.echo(f"experiment {exp.id} {exp.status}: " + ", ".join(
            f"{v.name} {v.share:.0%}" for v in exp.variants))

    @group.command("list")
    def list_(config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
        """Every experiment with its status and variants."""
        with opened_store(config, set_, store) as opened:
            exps = ExperimentService(opened).all()
        if not exps:
            typer.echo("no experiments; define one with shelfwise experiment create FILE")
        for e in exps:
            since = f" since {e.started_at:%Y-%m-%d %H:%M}" if e.started_at else ""
            typer.echo(f"{e.id}\t{e.status}{since}\t" + ", ".join(
                f"{v.name} {v.share:.0%}" for v in e.variants) + f"\t{','.join(e.surfaces)}")

    @group.command("start")
    def start_(experiment_id: IdArg, config: ConfigOpt = None, set_: SetOpt = None,
               store: StoreOpt = None) -> None:
        """Start assigning traffic (servers pick it up within serve.experiments.sync_seconds)."""
        with opened_store(config, set_, store) as opened:
            exp = ExperimentService(opened).start(experiment_id)
        typer.echo(f"experiment {exp.id} running since {exp.started_at:%Y-%m-%d %H:%M:%S} UTC")

    @group.command("stop")
    def stop(experiment_id: IdArg, config: ConfigOpt = None, set_: SetOpt = None,
             store: StoreOpt = None) -> None:
        """Stop assigning traffic; the report keeps covering its period."""
        with opened_store(config, set_, store) as opened:
            exp = ExperimentService(opened).stop(experiment_id)
        typer.echo(f"experiment {exp.id} stopped at {exp.stopped_at:%Y-%m-%d %H:%M:%S} UTC")

    @group.command("report")
    def report(
        experiment_id: IdArg,
        as_json: Annotated[bool, typer.Option("--json", help="the full report as JSON")] = False,
        bootstrap: Annotated[bool, typer.Option(
            help="bootstrap instead of Welch for revenue per user")] = False,
        config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None,
    ) -> None:
        """Per variant: users, impressions, CTR, add-to-cart rate, conversion, revenue per
        user with intervals; differences to control with p-values; SRM; the verdict."""
        # here, not at the top: scipy.stats would add ~0.4 s to every command's start
        from shelfwise.experiments.data import collect
        from shelfwise.experiments.report import analyse

        with opened_store(config, set_, store) as opened:
            exp = ExperimentService(opened).get(experiment_id)
            if exp.started_at is None:
                raise InvalidRequestError(f"experiment {exp.id!r} was never started")
            rec = analyse(collect(opened, exp),
                          revenue_method="bootstrap" if bootstrap else "welch").to_record()
        if as_json:
            typer.echo(json.dumps(rec, indent=2))
            return
        typer.echo(rec["verdict"])
        typer.echo(f"{'variant':<12}{'users':>9}{'impr.':>10}{'CTR':>9}  95% CI"
                   f"{'cart':>12}{'conv.':>8}{'rev/user':>10}")
        for name, v in rec["variants"].items():
            ctr = v["ctr"]
            ci = (f"[{ctr['lower']:.4f}, {ctr['upper']:.4f}]" if ctr["lower"] is not None
                  else "")
            rev = v["revenue_per_user"]["value"] if v["revenue_per_user"] else None
            typer.echo(f"{name:<12}{v['users']:>9,}{v['impressions']:>10,}"
                       f"{_num(ctr['value'], 4):>9}  {ci:<18}"
                       f"{_num(v['cart_rate']['value'], 3):>6}"
                       f"{_num(v['conversion']['value'], 3):>8}"
                       f"{_num(rev, 2):>10}")
        srm = rec["srm"]
        typer.echo(f"sample ratio: chi-square p = {srm['p_value']:.3g}"
                   f"{' (FLAGGED: the split is broken)' if srm['flagged'] else ''}")

    @group.command("replay")
    def replay_(
        surface: Annotated[str, typer.Option(help="exploration (feed slots) | promotions")],
        policy: Annotated[str, typer.Option(
            help="the candidate: uniform | egreedy | linucb | thompson")],
        param: Annotated[list[str] | None, typer.Option(
            help="policy hyperparameter key=value (repeatable)")] = None,
        train_fraction: Annotated[float, typer.Option(
            help="oldest part of the log that trains the candidate; the rest is replayed")
        ] = 0.5,
        estimators: Annotated[str, typer.Option(help="comma-separated")] = "snips,dr,ips",
        alpha: Annotated[float, typer.Option(help="1 - confidence level")] = 0.05,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        seed: int = 0,
        config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None,
    ) -> None:
        """Estimate, from the logged decisions and their propensities, what a candidate
        policy for exploration slots or promotions would have earned, with intervals."""
        from shelfwise.cli.policy_cmd import parse_params
        from shelfwise.experiments.replay import logged_decisions, replay
        from shelfwise.policies import make_policy

        kind: Literal["exploration", "promotions"]
        if surface == "exploration":
            kind = "exploration"
        elif surface == "promotions":
            kind = "promotions"
        else:
            raise typer.BadParameter("use exploration or promotions", param_hint="--surface")
        with opened_store(config, set_, store) as opened:
            found = logged_decisions(opened, kind)
            candidate = make_policy(policy, n_actions=found.log.n_actions, seed=seed,
                                    **parse_params(param or [], None))
            result = replay(found, candidate, kind,
                            train_fraction=train_fraction,
                            estimators=tuple(e.strip() for e in estimators.split(",")
                                             if e.strip()), alpha=alpha, seed=seed)
        if as_json:
            typer.echo(json.dumps(result.to_record(), indent=2, default=str))
            return
        typer.echo(f"{surface}: {result.evaluated_rows} logged decisions replayed "
                   f"({result.trained_rows} trained {result.policy}); arms: "
                   + ", ".join(result.arms))
        typer.echo(f"logged policy's mean reward on them: {result.logged_value:.4g}")
        level = f"{100 * (1 - alpha):g}%"
        for row in result.estimates.to_dict(orient="records"):
            typer.echo(f"  {row['estimator']:<10} {row['value']:.4g}  {level} CI "
                       f"[{row['lower']:.4g}, {row['upper']:.4g}]")


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
