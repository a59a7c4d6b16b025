"""What each dashboard page shows, read from the engine, the store and the metrics.

Each function returns the template's context (plain values and :class:`Chart` s); none writes
anything except :func:`shopper`, whose feed is logged as impressions like any other list (under
the ``dashboard`` surface's request, so it is told apart). Unknown ids and other bad input come
back as ``error`` for the page to show, never as an exception.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from shelfwise.dashboard.activity import Activity
from shelfwise.dashboard.charts import Chart, bars, day_label, lines, scatter_lines
from shelfwise.data.schemas import INTERACTION_TYPES, EventType
from shelfwise.exceptions import ShelfwiseError
from shelfwise.experiments.report import ratio_estimate
from shelfwise.experiments.stats import proportion

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine

#: Days of history the over-time plots show at most.
MAX_DAYS = 366
#: Words left out of the queries made from an item's title.
_STOP = frozenset(["a", "an", "and", "as", "at", "by", "for", "from", "in", "is", "of", "on",
                   "or", "the", "to", "with"])
HISTORY_TYPES = [*sorted(INTERACTION_TYPES), EventType.SEARCH]
ACTIVITY_TYPES = ("impression", "view", "click", "cart", "purchase", "search")


def time_labels(epochs: Any) -> list[str]:
    """Labels for points in time, as fine as their span needs (no two alike if possible)."""
    values = [float(e) for e in epochs]
    span = max(values) - min(values) if values else 0.0
    fmt = "%m-%d" if span > 4 * 86400 else "%m-%d %H:%M" if span > 4 * 3600 else "%H:%M:%S"
    return [datetime.fromtimestamp(v, UTC).strftime(fmt) for v in values]


def _ago(then: datetime) -> str:
    s = max(0.0, (datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


# ---- 1. overview ---------------------------------------------------------------------------
def overview(engine: Engine, activity: Activity, metrics_text: bytes | None,
             t: dict[str, str]) -> dict[str, Any]:
    snap = activity.snapshot()
    charts = []
    if not snap.events.empty:
        days, table = _per_day(snap.events)
        kinds = [k for k in ACTIVITY_TYPES if k in table.columns] + sorted(
            set(table.columns) - set(ACTIVITY_TYPES))
        charts.append(lines("events", t["events_over_time"], [day_label(d) for d in days],
                            {k: table[k].astype(int).tolist() for k in kinds},
                            ytitle=t["events"], x_label=t["day"], stacked=True))
    growth = _growth(snap.new_users, snap.new_items, t)
    if growth is not None:
        charts.append(growth)
    manifest = engine.recommender.bundle.manifest
    bundle = {
        "version": manifest.version, "created": manifest.created_at.isoformat(timespec="seconds"),
        "age": _ago(manifest.created_at), "config_hash": manifest.config_hash,
        "trained_on": f"{manifest.n_users:,} users · {manifest.n_items:,} items · "
                      f"{manifest.n_interactions:,} interactions",
        "metrics": _offline_metrics(manifest.model_dump(mode="json")),
        "weights": manifest.blend_weights}
    routes = _routes(metrics_text) if metrics_text is not None else None
    latency = None
    if routes:
        latency = bars("latency", t["latency"], [r["route"] for r in routes],
                       {t["p50"]: [r["p50"] for r in routes],
                        t["p95"]: [r["p95"] for r in routes]},
                       ytitle="ms", x_label=t["route"], horizontal=True)
    return {"counts": engine.store.counts(), "per_minute": snap.per_minute, "charts": charts,
            "bundle": bundle, "routes": routes, "latency": latency,
            "monitoring": metrics_text is not None,
            "counted_at": datetime.fromtimestamp(snap.counted_at, UTC).strftime("%H:%M:%S")}


def _per_day(counts: pd.DataFrame) -> tuple[list[int], pd.DataFrame]:
    """Every day of the last :data:`MAX_DAYS` up to the latest one (days without events
    included) and the counts per day (rows) and event type (columns)."""
    last = int(counts["day"].max())
    counts = counts[counts["day"] > last - MAX_DAYS]
    days = list(range(int(counts["day"].min()), last + 1))
    return days, counts.pivot_table(index="day", columns="type", values="n", aggfunc="sum",
                                    fill_value=0).reindex(days, fill_value=0)


def _growth(users: pd.Series, items: pd.Series, t: dict[str, str]) -> Chart | None:
    if users.empty and items.empty:
        return None
    days = sorted(set(users.index) | set(items.index))
    series = {}
    if not users.empty:
        series[t["users"]] = users.reindex(days, fill_value=0).cumsum().astype(int).tolist()
    if not items.empty:
        series[t["catalog"]] = items.reindex(days, fill_value=0).cumsum().astype(int).tolist()
    if len(days) > MAX_DAYS:  # the cumulative totals stay right; only the view is cut
        days, series = days[-MAX_DAYS:], {k: v[-MAX_DAYS:] for k, v in series.items()}
    return lines("growth", t["growth"], [day_label(d) for d in days], series,
                 ytitle=t["count"], x_label=t["day"])


def _offline_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """Validation figures the training run recorded (tuning and the pipeline's report)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, dict) and depth < 3:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            low = prefix.lower()
            if any(m in low for m in ("ndcg", "hr@", "hr10", "recall", "mrr", "auc")):
                out[prefix] = round(float(value), 4)

    for part in ("tuning", "pipeline", "search_ranker"):
        walk(part, manifest.get(part), 0)
    return dict(list(out.items())[:12])


def _routes(text: bytes) -> list[dict[str, Any]]:
    """Per API route: requests, 4xx, 5xx, error rate and p50/p95 from the histogram."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for fam in text_string_to_metric_families(text.decode()):
        if fam.name != "shelfwise_http_request_duration_seconds":
            continue
        for s in fam.samples:
            route = s.labels.get("route", "")
            if not route.startswith("/v1"):
                continue
            key = f"{s.labels.get('method', '')} {route}"
            if s.name.endswith("_count"):
                status = s.labels.get("status", "")
                counts[key]["all"] += int(s.value)
                counts[key][status[:1] + "xx"] += int(s.value)
            elif s.name.endswith("_bucket"):
                buckets[key][float(s.labels["le"])] += s.value
    out: list[dict[str, Any]] = []
    for key, c in counts.items():
        if not c["all"]:
            continue
        b = sorted(buckets[key].items())
        out.append({"route": key, "requests": c["all"], "4xx": c["4xx"], "5xx": c["5xx"],
                    "error_rate": c["5xx"] / c["all"], "p50": _quantile(b, 0.5),
                    "p95": _quantile(b, 0.95)})
    out.sort(key=lambda r: -r["requests"])
    return out[:20]


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile in ms from cumulative histogram buckets, interpolated as Prometheus'
    ``histogram_quantile`` does."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, prev_le, prev_n = q * buckets[-1][1], 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return round(prev_le * 1000, 2)
            frac = (rank - prev_n) / (n - prev_n) if n > prev_n else 1.0
            return round((prev_le + (le - prev_le) * frac) * 1000, 2)
        prev_le, prev_n = le, n
    return None


# ---- 2. a shopper --------------------------------------------------------------------------
def shopper(engine: Engine, user_id: str, diversity: float | None, lang: str,
            n: int = 12) -> dict[str, Any]:
    ctx: dict[str, Any] = {"user_id": user_id, "diversity": diversity}
    if not user_id:
        return ctx
    try:
        profile = engine.profile(user_id)
        ctx["feed"] = engine.feed(user_id, n, diversity=diversity, lang=lang, preview=True)
    except ShelfwiseError as exc:
        return {**ctx, "error": str(exc)}
    rec = engine.recommender
    key = engine.user_key(user_id)
    events = engine.store.user_events(key, limit=15, types=HISTORY_TYPES)
    ctx["profile"] = profile
    ctx["interest_titles"] = {i.label: [rec.catalog.title(x) or x for x in i.items[:3]]
                              for i in profile.interests}
    ctx["history"] = [{"time": e.timestamp.strftime("%Y-%m-%d %H:%M"), "type": str(e.type),
                       "item_id": e.item_id, "query": e.query,
                       "title": rec.catalog.title(e.item_id) if e.item_id else None}
                      for e in reversed(events)]
    ctx["changed"] = _changed(engine, key, events, ctx["feed"], n)
    return ctx


def _changed(engine: Engine, key: str, events: list[Any], feed: Any, n: int
             ) -> dict[str, Any] | None:
    """The model's feed before the user's last interaction against now: what entered and
    what left (diversity and exploration left out on both sides, so only the event counts)."""
    rec = engine.recommender
    last = next((e for e in reversed(events) if e.item_id and e.type in INTERACTION_TYPES),
                None)
    if last is None:
        return None
    history = rec.history(key)
    if len(history) == 0:
        return None
    old = [r.item_id for r in rec.feed(key, n, history=history[:-1]).items]
    new = [r.item_id for r in rec.feed(key, n).items]
    why = {it.item_id: it.explanation.text for it in feed.items}
    return {"event": {"type": str(last.type), "item_id": last.item_id,
                      "title": rec.catalog.title(last.item_id or ""),
                      "time": last.timestamp.strftime("%Y-%m-%d %H:%M")},
            "entered": [{"item_id": i, "title": rec.catalog.title(i), "rank": new.index(i) + 1,
                         "why": why.get(i)} for i in new if i not in old],
            "left": [{"item_id": i, "title": rec.catalog.title(i), "rank": old.index(i) + 1}
                     for i in old if i not in new]}


# ---- 3. an item ----------------------------------------------------------------------------
def item(engine: Engine, item_id: str, lang: str, t: dict[str, str],
         n: int = 10) -> dict[str, Any]:
    ctx: dict[str, Any] = {"item_id": item_id}
    if not item_id:
        return ctx
    found = engine.recommender.catalog.get(item_id) or engine.store.get_item(item_id)
    if found is None:
        return {**ctx, "error": f"{t['not_found']}: {item_id}"}
    ctx["item"] = found
    try:
        ctx["similar"] = engine.similar(item_id, n, lang=lang, preview=True)
        ctx["companions"] = engine.cart([item_id], n=n, lang=lang, preview=True)
    except ShelfwiseError as exc:
        ctx["error"] = str(exc)
    frame, _ = engine.store.daily_event_counts(item_id=item_id)
    if not frame.empty:
        days, table = _per_day(frame)
        col = {k: (table[k].astype(int).tolist() if k in table.columns else [0] * len(days))
               for k in ("impression", "view", "click", "cart", "purchase")}
        labels = [day_label(d) for d in days]
        ctx["activity"] = lines("item-activity", t["item_activity"], labels, {
            t["impressions"]: col["impression"], t["clicks"]: col["click"],
            t["carts"]: col["cart"], t["purchases"]: col["purchase"]},
            ytitle=t["count"], x_label=t["day"])
        ctx["rates"] = _item_rates(days, col, t)
        total = {k: sum(v) for k, v in col.items()}
        ctr, conversion = _rates(total)
        ctx["totals"] = {"impressions": total["impression"], "views": total["view"],
                         "clicks": total["click"], "carts": total["cart"],
                         "purchases": total["purchase"], "ctr": ctr, "conversion": conversion}
    ctx["queries"] = _item_queries(engine, found, item_id)
    return ctx


def _rates(counts: dict[str, int]) -> tuple[float | None, float | None]:
    """CTR (clicks / impressions) and conversion (purchases / impressions, or / views when
    nothing was logged as shown); None without a denominator."""
    base = counts["impression"] or counts["view"]
    return (counts["click"] / counts["impression"] if counts["impression"] else None,
            counts["purchase"] / base if base else None)


def _item_rates(days: list[int], col: dict[str, list[int]], t: dict[str, str]) -> Chart:
    """:func:`_rates` per day, per week when the span is over four weeks."""
    step = 7 if len(days) > 28 else 1
    labels: list[str] = []
    ctr: list[float | None] = []
    conv: list[float | None] = []
    for start in range(0, len(days), step):
        c, v = _rates({k: sum(x[start:start + step]) for k, x in col.items()})
        labels.append(day_label(days[start]))
        ctr.append(c)
        conv.append(v)
    chart = lines("item-rates", f"{t['ctr']} · {t['conversion']}", labels,
                  {t["ctr"]: ctr, t["conversion"]: conv},
                  x_label=t["day"] + (" (7)" if step == 7 else ""))
    chart.figure["layout"]["yaxis"]["tickformat"] = ".1%"
    return chart


def _item_queries(engine: Engine, found: Any, item_id: str,
                  max_queries: int = 5) -> list[dict[str, Any]]:
    """The item's popular queries (searches of the last 90 days that showed it, most frequent
    first; else queries made from its title and category) and where search ranks it now."""
    since = datetime.now(UTC) - timedelta(days=90)
    logged = engine.store.events_window([EventType.SEARCH], since)
    freq: Counter[str] = Counter()
    for query, context in zip(logged["query"], logged["context"], strict=True):
        if query and isinstance(context, dict) and item_id in (context.get("items") or []):
            freq[str(query).strip().lower()] += 1
    picked = [(q, "from_log") for q, _ in freq.most_common(max_queries)]
    if len(picked) < 2:
        words = [w for w in re.findall(r"[^\W_]+", (found.title or "").lower())
                 if w not in _STOP and (len(w) > 1 or not w.isascii())]
        guesses = [" ".join(words[:3]), " ".join(words[:2])]
        if found.category:
            guesses.append(found.category[-1])
        for g in guesses:
            if g and g.lower() not in {q for q, _ in picked}:
                picked.append((g.lower(), "from_title"))
    rows = []
    for q, origin in picked[:max_queries]:
        try:
            ids = [h.item_id for h in engine.search_service.search(q, None, 50).hits]
        except ShelfwiseError:
            continue
        rows.append({"query": q, "origin": origin, "count": freq.get(q, 0),
                     "rank": ids.index(item_id) + 1 if item_id in ids else None})
    return rows


# ---- 4. search playground ------------------------------------------------------------------
PERSONAL = ("profile_sim", "category_affinity", "root_category_affinity", "brand_affinity",
            "seen_count")


def search(engine: Engine, query: str, user_id: str, t: dict[str, str],
           n: int = 10) -> dict[str, Any]:
    ctx: dict[str, Any] = {"query": query, "user_id": user_id}
    if not query:
        return ctx
    try:
        fused, result, contrib = engine.search_service.compare(
            query, engine.user_key(user_id) if user_id else None, n)
    except ShelfwiseError as exc:
        return {**ctx, "error": str(exc)}
    title = engine.recommender.catalog.title
    ctx["ranker"] = result.ranker
    ctx["personalized"] = result.personalized
    ctx["fused"] = [{"item_id": i, "title": title(i), "rank": k + 1}
                    for k, i in enumerate(fused)]
    at = {i: k for k, i in enumerate(fused)}
    rows = []
    for k, (hit, parts) in enumerate(zip(result.hits, contrib, strict=True)):
        top = sorted(parts.items(), key=lambda kv: -abs(kv[1]))[:4]
        personal = sum(v for f, v in parts.items() if f in PERSONAL)
        was = at.get(hit.item_id)
        rows.append({"item_id": hit.item_id, "title": title(hit.item_id), "rank": k + 1,
                     "score": hit.score, "fused_rank": None if was is None else was + 1,
                     "moved": None if was is None else was - k,
                     "top": [(f, v) for f, v in top], "personal": personal})
    ctx["ranked"] = rows
    return ctx


# ---- 5. experiments ------------------------------------------------------------------------
def experiments(engine: Engine, cache: dict[str, tuple[float, Any]], ttl: float,
                t: dict[str, str]) -> dict[str, Any]:
    out = []
    for exp in sorted(engine.experiments.all(), key=lambda e: e.created_at, reverse=True):
        entry: dict[str, Any] = {"exp": exp, "status": exp.status}
        if exp.started_at is not None:
            try:
                entry.update(_cached(cache, f"exp:{exp.id}:{exp.status}", ttl,
                                     lambda e=exp: _experiment(engine, e.id, t)))
            except ShelfwiseError as exc:
                entry["error"] = str(exc)
        out.append(entry)
    return {"experiments": out}


def _cached(cache: dict[str, tuple[float, Any]], key: str, ttl: float, make: Any) -> Any:
    hit = cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    value = make()
    cache[key] = (now, value)
    return value


def _experiment(engine: Engine, experiment_id: str, t: dict[str, str]) -> dict[str, Any]:
    from shelfwise.experiments.report import analyse

    data = engine.experiment_data(experiment_id)
    report = analyse(data)
    alpha = data.experiment.alpha
    labels = time_labels(data.looks)
    series: dict[str, list[float | None]] = {}
    lower: dict[str, list[float | None]] = {}
    upper: dict[str, list[float | None]] = {}
    for name, v in data.variants.items():
        vals: list[float | None] = []
        lo: list[float | None] = []
        hi: list[float | None] = []
        for look in range(len(data.looks)):
            est = ratio_estimate(v.clicks_by_look[look], v.impressions_by_look[look], alpha)
            vals.append(est["value"])
            lo.append(est["lower"] if est["lower"] is not None else est["value"])
            hi.append(est["upper"] if est["upper"] is not None else est["value"])
        series[name], lower[name], upper[name] = vals, lo, hi
    chart = lines(f"exp-{experiment_id}", t["metric_over_time"], labels, series,
                  ytitle=t["ctr"], x_label="UTC", lower=lower, upper=upper)
    return {"report": report.to_record(), "chart": chart}


# ---- 6. promotions and exploration ---------------------------------------------------------
def promotions(engine: Engine, candidate: str | None, cache: dict[str, tuple[float, Any]],
               ttl: float, t: dict[str, str]) -> dict[str, Any]:
    from shelfwise.experiments.replay import logged_decisions

    surfaces = []
    surface: Literal["promotions", "exploration"]
    for surface in ("promotions", "exploration"):
        entry: dict[str, Any] = {"surface": surface}
        try:
            found = logged_decisions(engine.store, surface)
        except ShelfwiseError as exc:
            entry["error"] = str(exc)
            surfaces.append(entry)
            continue
        entry.update(_arms(found, surface, t))
        if candidate:
            try:
                entry["replay"] = _cached(
                    cache, f"replay:{surface}:{candidate}:{found.log.n_rounds}", ttl,
                    lambda f=found, s=surface: _replay(f, s, candidate))
            except (ShelfwiseError, ValueError) as exc:
                entry["replay_error"] = str(exc)
        surfaces.append(entry)
    texts = {p.id: p for p in engine.store.list_promotions()}
    return {"surfaces": surfaces, "candidate": candidate, "catalog": texts,
            "policy": engine.promotion_service.policy_name,
            "policies": ["uniform", "egreedy", "linucb", "thompson"]}


def _arms(found: Any, surface: str, t: dict[str, str], buckets: int = 12) -> dict[str, Any]:
    log = found.log
    actions, rewards = log.actions, log.rewards
    rows = []
    for k, arm in enumerate(found.arms):
        mask = actions == k
        est = proportion(int(rewards[mask].sum()), int(mask.sum()))
        rows.append({"arm": arm, "chosen": int(mask.sum()), "share": float(mask.mean()),
                     "value": est.value, "lower": est.lower, "upper": est.upper})
    times = found.times if found.times is not None else np.arange(len(actions), dtype=float)
    edges = np.linspace(times.min(), times.max(), buckets + 1)[1:]
    labels = time_labels(edges)
    series: dict[str, list[float | None]] = {}
    lower: dict[str, list[float | None]] = {}
    upper: dict[str, list[float | None]] = {}
    for k, arm in enumerate(found.arms):
        vals: list[float | None] = []
        lo: list[float | None] = []
        hi: list[float | None] = []
        for e in edges:  # cumulative up to each edge: the estimate as it stood then
            mask = (actions == k) & (times <= e)
            n = int(mask.sum())
            cum = proportion(int(rewards[mask].sum()), n) if n else None
            vals.append(cum.value if cum else None)
            lo.append(cum.lower if cum else None)
            hi.append(cum.upper if cum else None)
        series[arm], lower[arm], upper[arm] = vals, lo, hi
    chart = lines(f"arms-{surface}", t["value_over_time"], labels, series,
                  ytitle=t["value"], lower=lower, upper=upper)
    return {"arms": rows, "chart": chart, "decisions": len(actions)}


def _replay(found: Any, surface: str, candidate: str) -> dict[str, Any]:
    from shelfwise.experiments.replay import replay
    from shelfwise.policies import make_policy

    policy = make_policy(candidate, n_actions=found.log.n_actions, seed=0)
    return replay(found, policy, surface).to_record()  # type: ignore[arg-type]


# ---- 7. offline evaluation -----------------------------------------------------------------
def evaluation(paths: list[Path], t: dict[str, str]) -> dict[str, Any]:
    """Plots of evaluation records (HR/NDCG by model and dataset), accuracy–diversity curves
    and cold slices from the result files under ``paths``."""
    records: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[list[float], list[float], list[str]]]] = {}
    slices: list[dict[str, Any]] = []
    sources: list[str] = []
    for path in _files(paths):
        try:
            found = _read_results(path)
        except (OSError, ValueError):
            continue
        if not any(found):
            continue
        sources.append(str(path))
        records += found[0]
        for dataset, curve in found[1].items():
            curves.setdefault(dataset, {}).update(curve)
        slices += found[2]
    charts: list[Chart] = []
    if records:
        frame = pd.DataFrame(records)
        for (ds, metric), part in frame.groupby(["dataset", "metric"], sort=True):
            if metric not in ("HR@10", "NDCG@10"):
                continue
            part = part.drop_duplicates("model", keep="last").sort_values("value",
                                                                          ascending=False)
            charts.append(bars(f"eval-{ds}-{metric}", f"{metric} · {ds}",
                               part["model"].astype(str).tolist(),
                               {str(metric): part["value"].astype(float).tolist()},
                               ytitle=str(metric), x_label=t["model"], horizontal=True))
    for dataset, curve in sorted(curves.items()):
        charts.append(scatter_lines(
            f"div-{dataset}", f"{t['accuracy_diversity']} · {dataset}", curve,
            xtitle="ILD@10", ytitle="NDCG@10",
            columns=[t["method"], t["knob"], "ILD@10", "NDCG@10"]))
    if slices:
        frame = pd.DataFrame(slices)
        for ds, part in frame.groupby("dataset", sort=True):
            models = list(dict.fromkeys(part["model"]))
            names = list(dict.fromkeys(part["slice"]))
            series = {m: [_slice_value(part, m, s) for s in names] for m in models}
            charts.append(bars(f"cold-{ds!s}", f"{t['cold_slices']} · HR@10 · {ds!s}",
                               names, series, ytitle="HR@10", x_label=t["slice"]))
    return {"charts": charts, "sources": sources}


def _slice_value(frame: pd.DataFrame, model: str, name: str) -> float | None:
    hit = frame[(frame["model"] == model) & (frame["slice"] == name)]
    return None if hit.empty else float(hit["HR@10"].iloc[-1])


def _files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".json", ".jsonl"))
        elif p.is_file():
            out.append(p)
    return out


def _read_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any],
                                        list[dict[str, Any]]]:
    """(evaluate records, {dataset: {method: curve}}, cold-slice rows) in one file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [r for r in rows if _is_record(r)], {}, []
    doc = json.loads(text)
    if isinstance(doc, list):
        return [r for r in doc if _is_record(r)], {}, []
    if not isinstance(doc, dict):
        return [], {}, []
    records = [r for r in doc.get("records", []) if _is_record(r)] \
        if isinstance(doc.get("records"), list) else []
    dataset = doc.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else dataset
    name = str(name or path.stem)
    curves: dict[str, dict[str, tuple[list[float], list[float], list[str]]]] = {}
    table = doc.get("rows")
    if isinstance(table, list) and table and isinstance(table[0], dict) and {
            "knob", "ILD@10", "NDCG@10"} <= set(table[0]):
        per: dict[str, tuple[list[float], list[float], list[str]]] = {}
        for r in table:
            xs, ys, labels = per.setdefault(str(r.get("method")), ([], [], []))
            xs.append(float(r["ILD@10"]))
            ys.append(float(r["NDCG@10"]))
            labels.append(f"{r.get('method')} {r['knob']}")
        curves[name] = per
    slices = []
    if isinstance(doc.get("slices"), dict):
        for stage in ("before", "after"):
            models = doc.get(stage)
            if not isinstance(models, dict):
                continue
            for model, res in models.items():
                if not isinstance(res, dict):
                    continue
                for sl, vals in res.items():
                    if isinstance(vals, dict) and "HR@10" in vals:
                        label = model if stage == "before" else f"{model} (after)"
                        slices.append({"dataset": name, "model": label, "slice": sl,
                                       "HR@10": vals["HR@10"]})
    return records, curves, slices


def _is_record(r: Any) -> bool:
    return isinstance(r, dict) and {"model", "dataset", "metric", "value"} <= set(r)
