"""Known-answer tests for popularity and co-occurrence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shelfwise.data.interactions import Interactions
from shelfwise.retrieval import Cooccurrence, Popularity, recommend


def test_popularity_counts_and_decay() -> None:
    day = 86_400.0
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u1", "u2"],
            "item_id": ["old", "old", "old", "new", "new"],
            "timestamp": [0.0, 0.0, 0.0, 60 * day, 60 * day],
        }
    )
    data = Interactions.from_frame(frame)
    old, new = data.items.index("old"), data.items.index("new")
    plain = Popularity(half_life_days=None).fit(data).score([np.array([], np.int64)])[0]
    assert plain[old] == 3 and plain[new] == 2
    decayed = Popularity(half_life_days=30).fit(data).score([np.array([], np.int64)])[0]
    # 60 days = two half-lives: each old interaction counts 1/4.
    np.testing.assert_allclose(decayed[old], 0.75, rtol=1e-6)
    np.testing.assert_allclose(decayed[new], 2.0, rtol=1e-6)
    ordinal = Interactions.from_frame(frame, has_time=False)
    ignored = Popularity(half_life_days=30).fit(ordinal).score([np.array([], np.int64)])[0]
    assert ignored[old] == 3, "decay must not apply to order-only timestamps"


def test_cooccurrence_follows_sequences(two_groups: Interactions) -> None:
    gen = Cooccurrence(window=1).fit(two_groups)
    a2 = two_groups.items.index("a2")
    idx, _ = recommend(gen, [np.array([a2])], 2)
    assert set(two_groups.items.externals(idx[0])) == {"a1", "a3"}
    b1 = two_groups.items.index("b1")
    idx, _ = recommend(gen, [np.array([b1])], 1)
    assert two_groups.items.externals(idx[0]) == ["b2"]


def test_cooccurrence_recent_items_weigh_more(two_groups: Interactions) -> None:
    gen = Cooccurrence(window=1, history_decay=0.5).fit(two_groups)
    items = two_groups.items
    hist = items.indices(["a1", "b2"])  # b2 is the most recent
    idx, _ = recommend(gen, [hist], 2)
    top = items.externals(idx[0])
    assert top[0] in {"b1", "b3"} and top[1] in {"b1", "b3"}


def test_directed_cooccurrence_only_looks_forward(two_groups: Interactions) -> None:
    gen = Cooccurrence(window=1, directed=True).fit(two_groups)
    a4 = two_groups.items.index("a4")
    scores = gen.score([np.array([a4])])[0]
    a3 = two_groups.items.index("a3")
    assert scores[a3] < 1e-3, "nothing follows a4, so a3 gets only the popularity tie-break"
