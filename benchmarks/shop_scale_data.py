"""A reproducible synthetic shop for ``bench_shop_scale``: real titles, simulated behaviour.

Catalog: Instacart product names (category = department > aisle), Amazon Games titles
(category = video games > platform) and distinct Home Depot product titles (category = home
improvement > product type from a keyword, brand = first word), ids prefixed ``ic-``, ``gm-``,
``hd-``; shuffled with the seed and cut to ``n_items``; beyond the ~111k real titles the titles
are reused with a numeric suffix (`` #2``). About 85% of items get a price.

Events: Zipf item popularity (exponent ``ZIPF``, over a seeded random order of the items);
users have a heavy-tailed activity and 1-3 interest categories, and 80% of their visits are
inside one of them; every visit is a ``view``, preceded by a ``click`` (30%), followed by a
``cart`` (10%) which becomes a ``purchase`` (40%), i.e. roughly 69/21/7/3%; visits are uniform
over ``DAYS`` days. Exactly ``n_events`` rows, ids ``ev-<k>`` in time order.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ZIPF = 0.9
DAYS = 180
END = datetime(2025, 1, 1, tzinfo=UTC)
P_CLICK, P_CART, P_BUY, P_INTEREST = 0.30, 0.10, 0.40, 0.80
_HD_WORDS = (  # Home Depot product types, matched in title words
    "paint stain primer faucet toilet sink vanity cabinet shelf drill saw blade bulb light lamp "
    "chandelier sconce fan heater door window blind shade rug tile flooring moulding panel "
    "outlet switch wire cable pipe valve filter mirror chair table fence mower trimmer blower "
    "grill ladder hose sprayer battery charger adhesive caulk tape hinge lock screw bolt anchor "
    "bracket knob handle tool storage"
)
HD_TYPES = frozenset(_HD_WORDS.split())
PLATFORMS = ("pc", "mac", "xbox", "playstation", "ps4", "ps3", "nintendo", "wii", "gamecube",
             "3ds", "ds", "psp", "sega", "game boy")


def _games_platform(title: str) -> str:
    if " - " not in title:
        return "accessories and other"
    tail = title.rsplit(" - ", 1)[1].strip().lower()
    return tail if any(p in tail for p in PLATFORMS) and len(tail) < 30 else \
        "accessories and other"


def _hd_type(title: str) -> str:
    word: str
    for word in re.findall(r"[a-z]+", title.lower()):
        word = word[:-1] if word.endswith("s") and word[:-1] in HD_TYPES else word
        if word in HD_TYPES:
            return word
    return "other"


def real_titles(data: Path) -> pd.DataFrame:
    """All real titles: item_id, title, category ("a > b"), brand (or empty)."""
    ic = pd.read_csv(data / "instacart" / "products.csv")
    aisles = pd.read_csv(data / "instacart" / "aisles.csv").set_index("aisle_id")["aisle"]
    deps = pd.read_csv(data / "instacart" / "departments.csv").set_index(
        "department_id")["department"]
    ic_df = pd.DataFrame({
        "item_id": "ic-" + ic["product_id"].astype(str), "title": ic["product_name"],
        "category": ic["department_id"].map(deps) + " > " + ic["aisle_id"].map(aisles),
        "brand": ""})
    gm = pd.read_csv(data / "amazon_games" / "Games.item", sep="\t", quoting=3, skiprows=1,
                     names=["id", "title"], dtype=str, keep_default_na=False)
    gm_df = pd.DataFrame({
        "item_id": "gm-" + gm["id"], "title": gm["title"].map(html.unescape),
        "category": "video games > " + gm["title"].map(_games_platform), "brand": ""})
    hd = pd.read_csv(data / "home_depot" / "judgements.csv", dtype=str, keep_default_na=False)
    hd = hd.drop_duplicates("product_title")
    hd_df = pd.DataFrame({
        "item_id": "hd-" + hd["product_uid"], "title": hd["product_title"],
        "category": "home improvement > " + hd["product_title"].map(_hd_type),
        "brand": hd["product_title"].str.split().str[0].fillna("")})
    out = pd.concat([ic_df, gm_df, hd_df], ignore_index=True)
    out["title"] = out["title"].astype(str).str.strip()
    out = out[out["title"] != ""].drop_duplicates("item_id")
    return out.reset_index(drop=True)


def build_items(data: Path, n_items: int, seed: int) -> pd.DataFrame:
    """``n_items`` catalog rows (item_id, title, category, brand, price), seeded."""
    rng = np.random.default_rng(seed)
    real = real_titles(data)
    real = real.iloc[rng.permutation(len(real))].reset_index(drop=True)
    parts: list[pd.DataFrame] = []
    k = 1
    while sum(len(p) for p in parts) < n_items:
        copy = real.copy()
        if k > 1:  # reused titles: a numeric suffix keeps ids and texts distinct
            copy["item_id"] = copy["item_id"] + f"-{k}"
            copy["title"] = copy["title"] + f" #{k}"
        parts.append(copy)
        k += 1
    items = pd.concat(parts, ignore_index=True).iloc[:n_items].copy()
    base = items["item_id"].str[:3].map({"ic-": 4.0, "gm-": 30.0, "hd-": 45.0}).to_numpy()
    price = np.round(base * rng.lognormal(0.0, 0.6, len(items)), 2)
    items["price"] = np.where(rng.random(len(items)) < 0.85, price, np.nan)
    return items.reset_index(drop=True)


def build_events(items: pd.DataFrame, n_events: int, n_users: int, seed: int) -> pd.DataFrame:
    """Exactly ``n_events`` events (event_id, type, user_id, item_id, timestamp, value)."""
    rng = np.random.default_rng(seed + 1)
    n = len(items)
    weight = 1.0 / (rng.permutation(n) + 1.0) ** ZIPF
    group_names, group = np.unique(items["category"].to_numpy(dtype=str), return_inverse=True)
    group_w = np.bincount(group, weights=weight, minlength=len(group_names))
    # users: 1-3 interests (by category popularity) and a lognormal activity
    n_int = rng.choice([1, 2, 3], size=n_users, p=[0.3, 0.4, 0.3])
    interests = rng.choice(len(group_names), size=(n_users, 3), p=group_w / group_w.sum())
    activity = rng.lognormal(0.0, 1.0, n_users)
    # visits: enough that their funnel events reach n_events (1.44 events per visit)
    n_visits = int(n_events / (1 + P_CLICK + P_CART * (1 + P_BUY)) * 1.1) + 10
    user = rng.choice(n_users, size=n_visits, p=activity / activity.sum())
    pick = interests[user, (rng.random(n_visits) * n_int[user]).astype(np.int64)]
    inside = rng.random(n_visits) < P_INTEREST
    item = np.empty(n_visits, dtype=np.int64)
    cum = np.cumsum(weight)
    item[~inside] = np.searchsorted(cum, rng.random(int((~inside).sum())) * cum[-1])
    order = np.argsort(group, kind="stable")  # items of each category, contiguous
    starts = np.searchsorted(group[order], np.arange(len(group_names) + 1))
    for g in np.unique(pick[inside]):
        rows = np.flatnonzero(inside & (pick == g))
        members = order[starts[g]:starts[g + 1]]
        gcum = np.cumsum(weight[members])
        item[rows] = members[np.minimum(np.searchsorted(
            gcum, rng.random(len(rows)) * gcum[-1]), len(members) - 1)]
    item = np.minimum(item, n - 1)
    click = rng.random(n_visits) < P_CLICK
    cart = rng.random(n_visits) < P_CART
    buy = cart & (rng.random(n_visits) < P_BUY)
    total = np.cumsum(1 + click.astype(np.int64) + cart + buy)
    whole = int(np.searchsorted(total, n_events, side="right"))  # visits that fit entirely
    short = n_events - (int(total[whole - 1]) if whole else 0)  # filled by view-only visits
    extra = slice(whole, whole + short)
    click[extra] = cart[extra] = buy[extra] = False
    keep = np.zeros(n_visits, dtype=bool)
    keep[:whole + short] = True
    start = (END.timestamp() - DAYS * 86400) + rng.random(n_visits) * DAYS * 86400
    kinds = [("click", click, 0), ("view", np.ones(n_visits, bool), 3), ("cart", cart, 45),
             ("purchase", buy, 240)]
    frames = []
    for name, mask, offset in kinds:
        m = mask & keep
        frames.append(pd.DataFrame({"type": name, "u": user[m], "i": item[m],
                                    "t": np.floor(start[m]) + offset}))
    ev = pd.concat(frames, ignore_index=True).sort_values(["t", "u"], kind="stable")
    ev = ev.iloc[:n_events].reset_index(drop=True)
    price = items["price"].to_numpy()
    out = pd.DataFrame({
        "event_id": "ev-" + pd.Series(np.arange(len(ev))).astype(str),
        "type": ev["type"].to_numpy(),
        "user_id": pd.Series(ev["u"].to_numpy()).map(lambda u: f"u{u:07d}"),
        "item_id": items["item_id"].to_numpy()[ev["i"].to_numpy()],
        "timestamp": pd.to_datetime(ev["t"].to_numpy(), unit="s", utc=True).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "value": np.where(ev["type"].to_numpy() == "purchase", price[ev["i"].to_numpy()],
                          np.nan)})
    return out


def write_shop(data: Path, work: Path, n_items: int, n_events: int, n_users: int,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the shop and write ``items.csv`` and ``events.csv`` under ``work``."""
    items = build_items(data, n_items, seed)
    events = build_events(items, n_events, n_users, seed)
    work.mkdir(parents=True, exist_ok=True)
    items.to_csv(work / "items.csv", index=False)
    events.to_csv(work / "events.csv", index=False)
    return items, events


def build_queries(data: Path, items: pd.DataFrame, n: int, seed: int) -> list[str]:
    """``n`` search queries: half real Home Depot search terms, half two words of a catalog
    title (what a shopper who saw the product might type)."""
    rng = np.random.default_rng(seed + 2)
    terms = pd.read_csv(data / "home_depot" / "judgements.csv", usecols=["search_term"],
                        dtype=str, keep_default_na=False)["search_term"].unique()
    out = []
    titles = items["title"].to_numpy(dtype=str)
    for k in range(n):
        if k % 2 == 0:
            out.append(str(terms[rng.integers(len(terms))]))
            continue
        words = [w for w in re.findall(r"[a-z]{3,}", titles[rng.integers(len(titles))].lower())]
        start = int(rng.integers(max(1, len(words) - 1)))
        out.append(" ".join(words[start:start + 2]) or "gift")
    return out
