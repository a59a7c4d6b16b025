"""Training pairs for contrastive fine-tuning, mined from a shop's own data, and held-out
evaluation of an encoder on pairs or graded judgements.

A :class:`TextPair` is an anchor and a text that should embed close to it, optionally with a hard
negative that should not. Three sources:

* graded judgements (query, title, relevance), e.g. Home Depot: query -> title when the
  relevance reaches a threshold, with a lower-graded title of the same query as hard negative;
* search sessions in the store: a ``search`` event's query -> the item clicked, carted or bought
  from that result list (same ``request_id``), or, without request ids, the user's next
  interaction within a time window;
* user sequences: item -> the next distinct item the user interacted with (both as items).

Anchors that are queries are embedded as queries (e5's ``query:`` prefix); item anchors as items,
matching how the vectors are used when serving (search vs similar items).

Evaluators score a :class:`~shelfwise.text.base.TextEncoder` on held-out data: retrieval of each
held-out pair's positive among all held-out positives, or graded NDCG@k of each judged query's
own products (the search protocol in DESIGN.md).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from shelfwise.columns import Columns
from shelfwise.data.loading import catalog_texts
from shelfwise.data.schemas import INTERACTION_TYPES, Event, EventType
from shelfwise.storage.base import Store
from shelfwise.text.base import TextEncoder

#: Outcome events that make a searched item a positive for the query.
SEARCH_OUTCOMES: frozenset[EventType] = frozenset(
    {EventType.CLICK, EventType.CART, EventType.PURCHASE}
)


@dataclass(frozen=True)
class TextPair:
    """``anchor`` should embed near ``positive`` (and farther from ``negative`` when given).
    ``anchor_is_query`` selects the query side of asymmetric encoders for the anchor."""

    anchor: str
    positive: str
    negative: str | None = None
    anchor_is_query: bool = True


def pairs_from_judgements(
    frame: pd.DataFrame,
    *,
    min_relevance: float = 2.5,
    hard_negatives: bool = False,
    negative_margin: float = 1.0,
    seed: int = 0,
) -> list[TextPair]:
    """Query -> title pairs from graded judgements (columns ``query``, ``title``, ``relevance``).

    Titles with ``relevance >= min_relevance`` are positives. With ``hard_negatives``, each pair
    also gets a title of the same query graded at least ``negative_margin`` lower (picked at
    random with ``seed``), or none when the query has no such title.
    """
    need = {Columns.QUERY, Columns.TITLE, "relevance"}
    missing = need - set(frame.columns)
    if missing:
        raise ValueError(f"judgements lack column(s) {sorted(missing)}")
    rng = random.Random(seed)
    out: list[TextPair] = []
    for query, group in frame.groupby(Columns.QUERY, sort=False):
        rows = list(zip(group[Columns.TITLE].astype(str), group["relevance"].astype(float),
                        strict=True))
        for title, rel in rows:
            if rel < min_relevance:
                continue
            negative = None
            if hard_negatives:
                lower = [t for t, r in rows if r <= rel - negative_margin and t != title]
                negative = rng.choice(lower) if lower else None
            out.append(TextPair(str(query), title, negative))
    return out


def pairs_from_search_events(
    events: Iterable[Event],
    titles: Mapping[str, str],
    *,
    window_seconds: float = 1800.0,
) -> list[TextPair]:
    """Query -> item-text pairs from search events and the outcomes that followed them.

    An outcome (click/cart/purchase) citing a search's ``request_id`` pairs with that search's
    query. A search no outcome cites pairs with the user's first outcome within
    ``window_seconds`` after it and before their next search. Items without text are skipped.
    """
    searches: dict[str, Event] = {}
    by_user: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        if ev.type is EventType.SEARCH or ev.type in SEARCH_OUTCOMES:
            by_user[ev.user_id].append(ev)
            if ev.type is EventType.SEARCH and ev.request_id:
                searches[ev.request_id] = ev
    seen: set[tuple[str, str]] = set()
    out: list[TextPair] = []

    def add(query: str | None, item: str | None) -> None:
        text = titles.get(item or "")
        if query and text and (query, text) not in seen:
            seen.add((query, text))
            out.append(TextPair(query, text))

    cited: set[str] = set()
    for evs in by_user.values():
        for ev in evs:
            if ev.type is not EventType.SEARCH and ev.request_id in searches:
                cited.add(str(ev.request_id))
                add(searches[str(ev.request_id)].query, ev.item_id)
    for evs in by_user.values():
        evs.sort(key=lambda e: e.timestamp)
        for i, ev in enumerate(evs):
            if ev.type is not EventType.SEARCH or (ev.request_id and ev.request_id in cited):
                continue
            for nxt in evs[i + 1:]:
                if nxt.type is EventType.SEARCH:
                    break
                if (nxt.timestamp - ev.timestamp).total_seconds() > window_seconds:
                    break
                if not nxt.request_id or nxt.request_id == ev.request_id:
                    add(ev.query, nxt.item_id)
                    break
    return out


def pairs_from_sequences(
    histories: Iterable[Sequence[str]], titles: Mapping[str, str]
) -> list[TextPair]:
    """Item-text -> next-item-text pairs from ordered histories of item ids (consecutive
    repeats and items without text are skipped; each ordered pair counted once)."""
    seen: set[tuple[str, str]] = set()
    out: list[TextPair] = []
    for hist in histories:
        prev: str | None = None
        for item in hist:
            text = titles.get(item)
            if not text:
                continue
            if prev is not None and prev != text and (prev, text) not in seen:
                seen.add((prev, text))
                out.append(TextPair(prev, text, anchor_is_query=False))
            prev = text
    return out


def pairs_from_store(
    store: Store,
    *,
    search: bool = True,
    sequences: bool = True,
    window_seconds: float = 1800.0,
) -> list[TextPair]:
    """Search pairs, then sequence pairs, mined from everything in ``store``; item texts are
    the catalog texts the rest of shelfwise embeds (title, brand, category, description)."""
    titles = catalog_texts(store.items_frame())
    out: list[TextPair] = []
    if search:
        events = (ev for batch in store.iter_events() for ev in batch)
        out += pairs_from_search_events(events, titles, window_seconds=window_seconds)
    if sequences:
        frame = store.events_frame(types=sorted(INTERACTION_TYPES))
        if len(frame):
            frame = frame.sort_values([Columns.USER, Columns.TIME], kind="stable")
            hists = frame.groupby(Columns.USER, sort=False)[Columns.ITEM].agg(list)
            out += pairs_from_sequences([[str(i) for i in h] for h in hists], titles)
    return out


def sample_pairs(pairs: Sequence[TextPair], n: int | None, *, seed: int = 0) -> list[TextPair]:
    """At most ``n`` pairs drawn at random with ``seed`` (all, in order, when ``n`` is None)."""
    if n is None or n >= len(pairs):
        return list(pairs)
    return random.Random(seed).sample(list(pairs), n)


def split_by_anchor(
    pairs: Sequence[TextPair], holdout: float, *, seed: int = 0
) -> tuple[list[TextPair], list[TextPair]]:
    """Train and held-out pairs with disjoint anchors (a held-out query is never trained on)."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError("holdout must be in [0, 1)")
    anchors = sorted({p.anchor for p in pairs})
    random.Random(seed).shuffle(anchors)
    held = set(anchors[: round(len(anchors) * holdout)])
    return [p for p in pairs if p.anchor not in held], [p for p in pairs if p.anchor in held]


def pairs_digest(pairs: Sequence[TextPair]) -> str:
    """SHA-256 of the pairs in order: identifies a training set (checked on resume)."""
    h = hashlib.sha256()
    for p in pairs:
        for part in (p.anchor, p.positive, p.negative or "", "q" if p.anchor_is_query else "i"):
            h.update(part.encode("utf-8"))
            h.update(b"\x1f")
        h.update(b"\x1e")
    return h.hexdigest()


def read_pairs(path: str) -> list[TextPair]:
    """Pairs from a CSV/TSV/JSONL/Parquet file with ``anchor`` and ``positive`` columns and
    optional ``negative`` and ``anchor_is_query`` (default true)."""
    if path.endswith((".jsonl", ".ndjson")):
        frame = pd.read_json(path, lines=True, dtype=False)
    elif path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep="\t" if path.endswith(".tsv") else ",", dtype=str,
                            keep_default_na=False)
    if not {"anchor", "positive"} <= set(frame.columns):
        raise ValueError(f"{path}: pairs need 'anchor' and 'positive' columns")
    out = []
    for row in frame.to_dict("records"):
        neg = row.get("negative")
        flag = row.get("anchor_is_query", True)
        is_query = flag if isinstance(flag, bool) else str(flag).lower() not in ("0", "false", "no")
        out.append(TextPair(str(row["anchor"]), str(row["positive"]),
                            str(neg) if isinstance(neg, str) and neg else None, is_query))
    return out


# ---- held-out evaluation --------------------------------------------------------------------
class Evaluator(Protocol):
    """Scores an encoder on held-out data; higher is better unless the name says loss."""

    def __call__(self, encoder: TextEncoder) -> dict[str, float]: ...


def _encode_anchors(encoder: TextEncoder, pairs: Sequence[TextPair]) -> NDArray[np.float32]:
    out = np.zeros((len(pairs), encoder.dim), np.float32)
    for query in (True, False):
        idx = [i for i, p in enumerate(pairs) if p.anchor_is_query is query]
        if idx:
            texts = [pairs[i].anchor for i in idx]
            out[idx] = encoder.encode_queries(texts) if query else encoder.encode_items(texts)
    return out


class PairRetrievalEvaluator:
    """Each held-out anchor ranks every distinct positive text of the held-out set by cosine:
    ``recall@k`` and ``mrr`` of its own positive, and the InfoNCE ``loss`` at ``temperature``."""

    def __init__(self, pairs: Sequence[TextPair], *, k: int = 10,
                 temperature: float = 0.05) -> None:
        if not pairs:
            raise ValueError("no held-out pairs to evaluate on")
        self.pairs, self.k, self.temperature = list(pairs), k, temperature

    def __call__(self, encoder: TextEncoder) -> dict[str, float]:
        docs = sorted({p.positive for p in self.pairs})
        where = {t: i for i, t in enumerate(docs)}
        target = np.array([where[p.positive] for p in self.pairs])
        sims = _encode_anchors(encoder, self.pairs) @ encoder.encode_items(docs).T
        own = sims[np.arange(len(target)), target]
        rank = (sims > own[:, None]).sum(1)
        logits = sims / self.temperature
        top = logits.max(1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(1))
        return {f"recall@{self.k}": float((rank < self.k).mean()),
                "mrr": float((1.0 / (rank + 1)).mean()),
                "loss": float((lse - own / self.temperature).mean())}


def graded_ndcg(scores: ArrayLike, relevance: ArrayLike, k: int = 10, *,
                min_grade: float = 1.0) -> float | None:
    """NDCG@k of items ranked by ``scores`` with gain ``2^(r - min_grade) - 1`` (the lowest
    grade earns nothing); None when no item has a gain. Tied scores get the mean discount of
    the positions they share, i.e. the expected NDCG under random tie-breaking (so constant
    scores give the expected NDCG of a random order)."""
    s = np.asarray(scores, np.float64)
    gains = np.maximum(np.exp2(np.asarray(relevance, np.float64) - min_grade) - 1.0, 0.0)
    disc = 1.0 / np.log2(np.arange(2, len(s) + 2))
    disc[k:] = 0.0
    idcg = float(np.sort(gains)[::-1] @ disc)
    if idcg <= 0.0:
        return None
    order = np.argsort(-s, kind="stable")
    _, start, count = np.unique(-s[order], return_index=True, return_counts=True)
    dcg = 0.0
    for a, c in zip(start, count, strict=True):
        dcg += float(gains[order[a:a + c]].sum() * disc[a:a + c].mean())
    return dcg / idcg


def ndcg_by_query(frame: pd.DataFrame, scores: ArrayLike, k: int = 10, *,
                  min_grade: float = 1.0) -> pd.Series:
    """Per-query :func:`graded_ndcg` of ``scores`` (aligned with ``frame``'s rows) over each
    query's judged rows; queries whose judged items all have the lowest grade are left out."""
    s = np.asarray(scores, np.float64)
    rel = frame["relevance"].to_numpy(np.float64)
    out: dict[str, float] = {}
    for query, idx in frame.groupby(Columns.QUERY, sort=False).indices.items():
        value = graded_ndcg(s[idx], rel[idx], k, min_grade=min_grade)
        if value is not None:
            out[str(query)] = value
    return pd.Series(out, dtype=np.float64)


def cosine_scores(encoder: TextEncoder, frame: pd.DataFrame) -> NDArray[np.float32]:
    """Cosine of each row's query (as a query) and title (as an item), aligned with ``frame``;
    each distinct query and title is encoded once."""
    queries = frame[Columns.QUERY].astype(str)
    titles = frame[Columns.TITLE].astype(str)
    uq, qi = np.unique(queries.to_numpy(), return_inverse=True)
    ut, ti = np.unique(titles.to_numpy(), return_inverse=True)
    q = encoder.encode_queries(uq.tolist())
    t = encoder.encode_items(ut.tolist())
    return np.asarray(np.einsum("ij,ij->i", q[qi], t[ti]), dtype=np.float32)


class JudgedNDCGEvaluator:
    """Mean graded NDCG@k of held-out judged queries re-ranking their own judged titles by
    cosine (columns ``query``, ``title``, ``relevance``)."""

    def __init__(self, frame: pd.DataFrame, *, k: int = 10, min_grade: float = 1.0) -> None:
        if frame.empty:
            raise ValueError("no held-out judgements to evaluate on")
        self.frame, self.k, self.min_grade = frame.reset_index(drop=True), k, min_grade

    def __call__(self, encoder: TextEncoder) -> dict[str, float]:
        per_query = ndcg_by_query(self.frame, cosine_scores(encoder, self.frame), self.k,
                                  min_grade=self.min_grade)
        return {f"ndcg@{self.k}": float(per_query.mean()), "queries": float(len(per_query))}
