"""Fidelity of the feed's ``similar_to`` explanations on Amazon Beauty or Games.

Protocol: the served feed (a bundle trained as ``shelfwise train`` does, default config) is
trained on the leave-last-out train split (each user's last item held out). For a sample of
users with at least two distinct history items, the top-10 feed (seen items excluded) is
explained by the server's own explain stage. For every item whose reason is ``similar_to``,
each distinct history item is removed in turn (all its occurrences) and the item rescored with
the full served blend (every generator's whole row re-normalised, as serving does). An item is
faithful when the named history item is the one whose removal lowers its score most (ties
count when the named item is among the tied). Also reported: the same over every item naming
a history item; ``fidelity_every_item_named`` with no dominance gate (every history-driven
item named after its top history item, none left to ``matches_interest``); the reason mix; and
the explain stage's time per request.

    .venv/bin/python -m benchmarks.bench_explain beauty|games [--users 500]

Writes ``benchmarks/results/explain_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter

import numpy as np

from benchmarks.common import write_results
from shelfwise.bundle.train import build_bundle
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.data.schemas import Item
from shelfwise.evaluation import LeaveLastOut
from shelfwise.retrieval.base import sorted_unique
from shelfwise.services import explain
from shelfwise.services.explain import Explainer
from shelfwise.services.recommender import RecommendationList, Recommender
from shelfwise.services.stages import Slate, from_recommendations
from shelfwise.storage import open_store

PRESETS = {"beauty": "amazon_sequences", "games": "amazon_games"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=sorted(PRESETS))
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    start = time.perf_counter()
    load = os.getloadavg()
    data, name = load_data(None, PRESETS[args.dataset], None)
    train = LeaveLastOut().split(data).train
    t = time.perf_counter()
    bundle = build_bundle(train)
    train_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/shop.db")
        titles = train.item_text or [""] * train.n_items
        store.upsert_items([Item(id=e, title=titles[k]) for k, e in enumerate(train.items.ids)])
        rec = Recommender(bundle, store)
        explainer = Explainer(rec)
        histories = train.histories()
        to_model = rec.items.indices(list(train.items.ids))
        eligible = [u for u, h in enumerate(histories) if len(np.unique(h)) >= 2]
        users = np.random.default_rng(0).choice(eligible, min(args.users, len(eligible)),
                                                replace=False)
        reasons: Counter[str] = Counter()
        hits = total = ties = hits_any = total_any = hits_all = total_all = 0
        explain_s = 0.0
        for u in users:
            h = np.asarray(to_model[histories[int(u)]], np.int64)[-rec.history_limit:]
            scores, names, label = rec._blend(h)
            recs = rec._finish(scores, args.n, sorted_unique(h), label, names)
            slate = Slate("feed", "bench", args.n, from_recommendations(RecommendationList(recs)),
                          history=h)
            t = time.perf_counter()
            explainer(slate)
            explain_s += time.perf_counter() - t
            reasons.update(c.reason for c in slate.items)
            named = [c for c in slate.items if c.related_item is not None]
            ungated = Slate("feed", "bench", args.n,
                            from_recommendations(RecommendationList(recs)), history=h)
            dominant, explain.DOMINANT = explain.DOMINANT, 0.0  # name an item for every one
            explainer(ungated)
            explain.DOMINANT = dominant
            distinct = np.unique(h)
            rows = rec.blend.score_parts([h[h != j] for j in distinct])[0]
            for c in ungated.items:
                if c.reason == "similar_to" and c.related_item is not None:
                    k = rec.items.index(c.item_id)
                    drops = scores[k] - rows[:, k]
                    top = np.flatnonzero(drops >= drops.max() - 1e-7)
                    hits_all += rec.items.index(c.related_item) in distinct[top]
                    total_all += 1
            for c in named:
                k = rec.items.index(c.item_id)
                drops = scores[k] - rows[:, k]
                top = np.flatnonzero(drops >= drops.max() - 1e-7)
                ok = rec.items.index(c.related_item) in distinct[top]
                hits_any += ok
                total_any += 1
                if c.reason == "similar_to":
                    hits += ok
                    total += 1
                    ties += len(top) > 1
        store.close()
    n_items = sum(reasons.values())
    result = {
        "dataset": name,
        "protocol": "leave-last-out train split; served blend feed top-10, seen excluded; "
                    "remove each distinct history item, rescore with the full blend",
        "users": len(users),
        "blend_weights": rec.blend.weights_,
        "fidelity_similar_to": round(hits / max(total, 1), 4),
        "similar_to_items": total,
        "tied_argmax": ties,
        "fidelity_any_named_item": round(hits_any / max(total_any, 1), 4),
        "named_items": total_any,
        "fidelity_every_item_named": round(hits_all / max(total_all, 1), 4),
        "every_item_named_items": total_all,
        "dominance_share": explain.DOMINANT,
        "reasons": {r: round(v / max(n_items, 1), 4) for r, v in reasons.most_common()},
        "explain_ms_per_request": round(1000 * explain_s / max(len(users), 1), 3),
        "train_seconds": round(train_s, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    path = write_results(f"explain_{args.dataset}", result)
    print({k: v for k, v in result.items() if k != "protocol"})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
