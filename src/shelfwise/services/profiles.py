"""Readable user profiles: recent items, long-term interest clusters and interest tags."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.schemas import Item
from shelfwise.retrieval.base import unique_first
from shelfwise.services.recommender import Recommender

_WORD = re.compile(r"[a-z][a-z0-9\-]{2,}")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_STOP = frozenset(
    {"the", "and", "for", "with", "from", "your", "you", "our", "new", "set", "pack",
     "edition", "version", "count", "inch", "size", "color", "black", "white", "blue", "red",
     "green", "free", "case", "cover", "box", "pcs", "piece", "pieces"}
)


@dataclass
class Interest:
    """A long-term interest: a cluster of the user's items in embedding space."""

    label: str
    weight: float
    items: list[str]


@dataclass
class UserProfile:
    user_id: str
    history_length: int
    recent_items: list[str]
    interests: list[Interest] = field(default_factory=list)
    tags: list[tuple[str, float]] = field(default_factory=list)
    encoder: str | None = None
    vector: list[float] | None = None


def _keywords(text: str) -> list[str]:
    if _CJK.search(text):
        import rjieba

        return [w for w in rjieba.cut(text) if len(w) >= 2 and _CJK.search(w)]
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def interest_tags(items: list[Item], weights: NDArray[np.float64], n: int = 8) -> list[
        tuple[str, float]]:
    """Most weighted categories (leaf-most first) or, without categories, title keywords."""
    counts: dict[str, float] = {}
    for it, w in zip(items, weights, strict=True):
        if it.category:
            for depth, part in enumerate(it.category):
                counts[part] = counts.get(part, 0.0) + float(w) * (1 + depth) / len(it.category)
        elif it.tags:
            for tag in it.tags:
                counts[tag] = counts.get(tag, 0.0) + float(w)
        else:
            for word in set(_keywords(it.title)):
                counts[word] = counts.get(word, 0.0) + float(w)
    total = sum(counts.values()) or 1.0
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return [(tag, round(v / total, 4)) for tag, v in top]


def _clusters(vectors: NDArray[np.float32], weights: NDArray[np.float64], k: int) -> NDArray[
        np.int64]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=0)
    labels: NDArray[np.int64] = km.fit_predict(vectors, sample_weight=weights).astype(np.int64)
    return labels


def build_profile(rec: Recommender, user_id: str, *, n_recent: int = 10, max_interests: int = 3,
                  include_vector: bool = False, decay: float = 0.9) -> UserProfile:
    """The profile as the recommender sees it now (it follows every stored event)."""
    history = rec.history(user_id)
    ids = rec.items.externals(history)
    recent = list(dict.fromkeys(reversed(ids)))[:n_recent]
    profile = UserProfile(user_id=user_id, history_length=len(history), recent_items=recent)
    if len(history) == 0:
        return profile
    uniq, last_pos = unique_first(history[::-1])  # position from the end
    weights = decay ** last_pos.astype(np.float64)
    catalog = rec.store.get_items(rec.items.externals(uniq))
    items = [catalog.get(e) or Item(id=e) for e in rec.items.externals(uniq)]
    profile.tags = interest_tags(items, weights)
    sem = rec.semantic
    if sem is None:
        return profile
    profile.encoder = sem.encoder_id_
    if include_vector:
        profile.vector = [round(float(x), 6) for x in sem.profile(history)]
    vecs = sem.vectors_[uniq]
    has_vec = np.linalg.norm(vecs, axis=1) > 0
    if has_vec.sum() == 0:
        return profile
    vecs, w, its = vecs[has_vec], weights[has_vec], [i for i, h in zip(items, has_vec,
                                                                       strict=True) if h]
    k = int(min(max_interests, max(1, len(its) // 3)))
    labels = _clusters(vecs, w, k) if k > 1 else np.zeros(len(its), dtype=np.int64)
    total = float(w.sum())
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        centre = vecs[members].mean(axis=0)
        central = members[np.argmax(vecs[members] @ centre)]
        order = members[np.argsort(-(vecs[members] @ centre))]
        best = its[int(central)]
        label = best.category[-1] if best.category else (best.title or best.id)[:60]
        profile.interests.append(Interest(
            label=label, weight=round(float(w[members].sum()) / total, 4),
            items=[its[int(m)].id for m in order[:5]],
        ))
    profile.interests.sort(key=lambda i: -i.weight)
    return profile
