"""``shelfwise finetune``: contrastive fine-tuning of the e5 encoder on the shop's own pairs.

Pairs come from one source: the store (search query -> clicked/bought item, item -> next item),
graded judgements (query, title, relevance; Home Depot's Kaggle columns are read as they are),
or a pairs file (anchor, positive[, negative]). A share of the anchors (queries) is held out and
scored before and after training, so the run says whether it helped.
"""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from shelfwise.cli.common import StoreOpt, store_url
from shelfwise.exceptions import ConfigError, ShelfwiseError
from shelfwise.text.pairs import (
    Evaluator,
    JudgedNDCGEvaluator,
    PairRetrievalEvaluator,
    TextPair,
    pairs_from_judgements,
    pairs_from_store,
    read_pairs,
    split_by_anchor,
)

if TYPE_CHECKING:  # torch loads with it: only the finetune command imports it
    from shelfwise.text.finetune import FinetuneConfig


def read_judgements(path: Path) -> pd.DataFrame:
    """Judgements with ``query``, ``title``, ``relevance`` (Home Depot's columns accepted)."""
    from shelfwise.data.presets import read_home_depot_judgements

    head = pd.read_csv(path, nrows=0)
    if "search_term" in head.columns:
        return read_home_depot_judgements(path)
    frame = pd.read_csv(path)
    missing = {"query", "title", "relevance"} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: judgements need columns query, title, relevance "
                          f"(missing {sorted(missing)})")
    return frame


def gather(
    store: str, judgements: Path | None, pairs_file: Path | None, *, min_relevance: float,
    hard_negatives: bool, search: bool, sequences: bool, holdout: float, eval_max: int,
    seed: int,
) -> tuple[list[TextPair], Evaluator | None, str]:
    """Training pairs, a held-out evaluator (None without holdout) and a description."""
    if judgements is not None and pairs_file is not None:
        raise ConfigError("give --judgements or --pairs, not both")
    if judgements is not None:
        frame = read_judgements(judgements)
        queries = sorted(frame["query"].astype(str).unique())
        random.Random(seed).shuffle(queries)
        held = set(queries[: round(len(queries) * holdout)])
        is_held = frame["query"].astype(str).isin(held)
        pairs = pairs_from_judgements(frame[~is_held], min_relevance=min_relevance,
                                      hard_negatives=hard_negatives, seed=seed)
        kept = set(sorted(held)[:eval_max])
        test = frame[frame["query"].astype(str).isin(kept)]
        evaluator: Evaluator | None = JudgedNDCGEvaluator(test) if len(test) else None
        return pairs, evaluator, f"{judgements} ({len(kept)} held-out queries)"
    if pairs_file is not None:
        every = read_pairs(str(pairs_file))
        source = str(pairs_file)
    else:
        from shelfwise.storage import open_store

        every = pairs_from_store(open_store(store), search=search, sequences=sequences)
        source = f"store {store}"
    train, held_pairs = split_by_anchor(every, holdout, seed=seed)
    held_pairs = held_pairs[:eval_max]
    evaluator = PairRetrievalEvaluator(held_pairs) if len(held_pairs) >= 2 else None
    return train, evaluator, f"{source} ({len(held_pairs)} held-out pairs)"


def build_config(path: Path | None, overrides: dict[str, Any]) -> FinetuneConfig:
    """``[finetune]`` of a TOML file (or the whole file), then the options given."""
    from shelfwise.text.finetune import FinetuneConfig

    raw: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        raw = dict(data.get("finetune", data))
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return FinetuneConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"bad fine-tuning settings: {exc}") from exc


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        out: Annotated[Path, typer.Argument(help="directory for the tuned encoder")],
        store: StoreOpt = None,
        judgements: Annotated[Path | None, typer.Option(
            help="CSV of graded (query, title, relevance) judgements")] = None,
        pairs: Annotated[Path | None, typer.Option(
            help="CSV/TSV/JSONL of anchor, positive[, negative] pairs")] = None,
        min_relevance: Annotated[float, typer.Option(help="judged positives")] = 2.5,
        hard_negatives: Annotated[bool, typer.Option(
            help="add a lower-graded title of the same query to each judged pair")] = False,
        search: Annotated[bool, typer.Option(help="store: search -> outcome pairs")] = True,
        sequences: Annotated[bool, typer.Option(help="store: item -> next item")] = True,
        method: Annotated[str | None, typer.Option(help="lora (default) or full")] = None,
        epochs: Annotated[int | None, typer.Option()] = None,
        batch_size: Annotated[int | None, typer.Option()] = None,
        max_len: Annotated[int | None, typer.Option(help="tokens per text (default 64)")] = None,
        lr: Annotated[float | None, typer.Option(help="default 2e-4 lora, 2e-5 full")] = None,
        max_pairs: Annotated[int | None, typer.Option(help="default 8000")] = None,
        train_layers: Annotated[int | None, typer.Option(help="top N layers only")] = None,
        symmetric: Annotated[bool | None, typer.Option("--symmetric/--no-symmetric")] = None,
        checkpoint_every: Annotated[int | None, typer.Option(help="steps")] = None,
        threads: Annotated[int | None, typer.Option(help="torch threads (default 1)")] = None,
        seed: Annotated[int | None, typer.Option()] = None,
        self_contained: Annotated[bool | None, typer.Option(
            "--self-contained/--delta", help="write the full model, not the changed weights")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="TOML file (its finetune table)")] = None,
        holdout: Annotated[float, typer.Option(help="share of anchors held out")] = 0.1,
        eval_max: Annotated[int, typer.Option(help="held-out anchors scored at most")] = 300,
        resume: Annotated[bool, typer.Option(help="continue OUT's checkpoint")] = False,
        max_minutes: Annotated[float | None, typer.Option(
            help="stop (checkpointed, --resume later) after this long")] = None,
    ) -> None:
        """Fine-tune e5 (LoRA or full) on pairs mined from the store, judgements or a file;
        reports held-out scores before and after, and writes a loadable tuned encoder."""
        console = Console(stderr=True)
        try:
            cfg = build_config(config, {
                "method": method, "epochs": epochs, "batch_size": batch_size,
                "max_len": max_len, "lr": lr, "max_pairs": max_pairs,
                "train_layers": train_layers, "symmetric": symmetric,
                "checkpoint_every": checkpoint_every, "num_threads": threads, "seed": seed,
                "self_contained": self_contained,
            })
            train, evaluator, source = gather(
                store_url(store), judgements, pairs, min_relevance=min_relevance,
                hard_negatives=hard_negatives, search=search, sequences=sequences,
                holdout=holdout, eval_max=eval_max, seed=cfg.seed)
            if len(train) < 2:
                raise ConfigError(f"only {len(train)} training pair(s) from {source}")
            console.print(f"{len(train):,} pairs from {source}; {cfg.method}, "
                          f"{min(len(train), cfg.max_pairs or len(train)):,} used")
            from shelfwise.text.finetune import finetune

            result = finetune(train, out, cfg, evaluator=evaluator, resume=resume,
                              max_seconds=max_minutes * 60 if max_minutes else None,
                              progress=True)
        except (ShelfwiseError, ValueError, OSError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        rate = f"{result.seconds:.0f} s, {result.pairs_per_second:.1f} pairs/s"
        if not result.finished:
            typer.echo(f"stopped at step {result.step}/{result.total_steps} ({rate}); "
                       f"continue with --resume")
            return
        typer.echo(f"tuned encoder {result.encoder_id} written to {out} "
                   f"({result.step} steps, {rate})")
        for name in (n for n in result.before if n != "queries"):
            after = result.after.get(name, float("nan"))
            typer.echo(f"  held-out {name}: {result.before[name]:.4f} -> {after:.4f}")
