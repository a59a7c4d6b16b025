"""Build ``data/demo/``: a small slice of the Amazon Video Games preset that ships with shelfwise.

Samples users with a fixed seed, keeps each one's full history and the titles of every item they
touched, and writes plain CSV files that the generic importer also reads:

    .venv/bin/python scripts/make_demo_data.py            # defaults: 3000 users, seed 20240531
    .venv/bin/python scripts/make_demo_data.py --source ../shared/data/amazon_games
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from shelfwise.columns import Columns
from shelfwise.data.presets import default_path, load_preset, repo_dir

USERS = 3_000
SEED = 20240531

README = """# Demo data: Amazon Video Games slice

A small, fixed slice of real shop behaviour so that `shelfwise import --preset demo` (and
`make demo`) work without downloading anything.

## Files
| file | columns | rows |
|---|---|---|
| `items.csv` | `item_id`, `title` | {n_items:,} |
| `events.csv` | `user_id`, `item_id`, `timestamp`, `type` | {n_events:,} ({n_users:,} users) |

- One row per review, read as a `purchase`, oldest first per user.
- The source has only the order of each user's reviews, no dates, so `timestamp` is *ordinal*:
  `2000-01-01T00:00:00Z` plus k seconds, k = position in the user's history (0 = oldest). The
  preset records `time_kind = ordinal` in the store; do not read gaps between times as real.
- Both are plain CSV (UTF-8, header line), so the generic importer reads them too:
  `shelfwise import --kind items data/demo/items.csv` and
  `shelfwise import --kind events data/demo/events.csv --time-kind ordinal`. Event ids are
  derived from the row content, so re-importing (or later importing the full `amazon_games`
  preset) stores each event once.

## Source
Amazon Review Data (2018), *Video Games* category (Jianmo Ni, Jiacheng Li, Julian McAuley,
"Justifying recommendations using distantly-labeled reviews and fine-grained aspects",
EMNLP 2019), as processed by UniSRec / LLMRank (Hou et al.): item titles and ordered user
histories (`Games.item`, `Games.test.inter`; the test file's history plus its target is the
full sequence). HTML entities in titles (`&amp;`, `&reg;`, ...) are decoded.

## License
Research use only, under the terms of the McAuley lab's Amazon review data
(https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/). Not for commercial use; not covered by
shelfwise's Apache-2.0 license.

## How it was made
`{command}`: {n_users:,} users sampled uniformly without replacement from the
{n_source_users:,} users of the processed data, seed {seed}, with their full histories (every
user has at least 5 items), plus the titles of the {n_items:,} items they touch.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=default_path("amazon_games"),
                        help="folder with Games.item and Games.test.inter")
    parser.add_argument("--out", type=Path, default=repo_dir() / "data" / "demo")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    data = load_preset("amazon_games", args.source)
    assert data.events is not None and data.users is not None
    all_users = data.users[Columns.USER].to_numpy()
    rng = np.random.default_rng(args.seed)
    chosen = set(rng.choice(all_users, size=min(args.users, len(all_users)), replace=False))
    events = data.events[data.events[Columns.USER].isin(chosen)].copy()
    events[Columns.TIME] = events[Columns.TIME].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    items = data.items[data.items[Columns.ITEM].isin(set(events[Columns.ITEM]))]

    args.out.mkdir(parents=True, exist_ok=True)
    items[[Columns.ITEM, Columns.TITLE]].to_csv(args.out / "items.csv", index=False,
                                                lineterminator="\n")
    events[[Columns.USER, Columns.ITEM, Columns.TIME, Columns.TYPE]].to_csv(
        args.out / "events.csv", index=False, lineterminator="\n")
    defaults = (args.users, args.seed) == (USERS, SEED)
    command = "python scripts/make_demo_data.py" + (
        "" if defaults else f" --users {args.users} --seed {args.seed}")
    (args.out / "README.md").write_text(README.format(
        n_items=len(items), n_events=len(events), n_users=len(chosen), seed=args.seed,
        n_source_users=len(all_users), command=command), encoding="utf-8")
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 1e6
    print(f"wrote {args.out}: {len(chosen):,} users, {len(items):,} items, "
          f"{len(events):,} events, {size:.1f} MB")


if __name__ == "__main__":
    main()
