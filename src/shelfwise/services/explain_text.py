"""The sentence in every explanation (field ``text``), from templates in Chinese and English.

The language is the request's ``Accept-Language`` (its most preferred tag: ``zh*`` gives
Chinese, any other language English); without one, the item's own ``language`` or, failing
that, the script of its title. Names an explanation quotes (item titles, tags, categories,
query words) are truncated so the sentence stays short.
"""

from __future__ import annotations

import re

from shelfwise.data.schemas import Item
from shelfwise.retrieval.semantic import script_of

Lang = str  # "en" or "zh"

TEMPLATES: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "similar_to": {"named": "Because you viewed {item}", "": "Similar to what you viewed"},
        "similar_item": {"named": "Similar to {item}", "": "Similar to this item"},
        "bought_before": {"named": "You bought {item} before", "": "You bought it before"},
        "matches_interest": {"named": "Matches your interest in {label}",
                             "": "Matches your interests"},
        "bought_with": {"named": "Often bought with {item}",
                        "": "Often bought with items in your cart"},
        "popular_in": {"named": "Popular in {label}", "": "Popular with shoppers"},
        "new_arrival": {"named": "New arrival in {label}", "": "New arrival"},
        "trending": {"named": "Trending in {label}", "": "Trending now"},
        "explore": {"named": "Something new to explore", "": "Something new to explore"},
        "matches_query": {"named": "Matches \u201c{label}\u201d",
                          "": "Related to your search"},
        "searched": {"named": "Because you searched \u201c{label}\u201d",
                     "": "Related to your searches"},
        "popular_with": {"named": "Popular with shoppers like you ({label})",
                         "": "Popular with shoppers like you"},
        "new_similar": {"named": "New arrival, like {item}", "": "New arrival"},
        "new_with": {"named": "New arrival that goes with {item}",
                     "": "New arrival that goes with your cart"},
    },
    "zh": {
        "similar_to": {"named": "因为您浏览过「{item}」", "": "与您浏览过的商品相似"},
        "similar_item": {"named": "与「{item}」相似", "": "与此商品相似"},
        "bought_before": {"named": "您曾购买过「{item}」", "": "您曾购买过此商品"},
        "matches_interest": {"named": "符合您对「{label}」的兴趣", "": "符合您的兴趣"},
        "bought_with": {"named": "常与「{item}」一起购买", "": "常与购物车中的商品一起购买"},
        "popular_in": {"named": "「{label}」中的热门商品", "": "热门商品"},
        "new_arrival": {"named": "「{label}」新品", "": "新品上架"},
        "trending": {"named": "「{label}」中正在流行", "": "最近流行"},
        "explore": {"named": "为您发现新东西", "": "为您发现新东西"},
        "matches_query": {"named": "匹配「{label}」", "": "与您的搜索相关"},
        "searched": {"named": "因为您搜索过「{label}」", "": "与您的搜索相关"},
        "popular_with": {"named": "与您相似的顾客喜欢（{label}）", "": "与您相似的顾客喜欢"},
        "new_similar": {"named": "新品，类似「{item}」", "": "新品上架"},
        "new_with": {"named": "新品，适合搭配「{item}」", "": "新品，适合搭配购物车中的商品"},
    },
}
"""Per language, per template key (a reason code, or a variant of one), the sentence with a
name (``named``) and without (``""``)."""

MAX_TITLE = {"en": 40, "zh": 16}
"""Characters of a quoted title or label kept per language (an ellipsis marks the cut)."""

_TAG = re.compile(r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?")


def request_language(header: str | None) -> Lang | None:
    """``zh`` or ``en`` from an ``Accept-Language`` header (its most preferred language);
    None when there is no usable header (then each item's language decides)."""
    best: tuple[float, str] | None = None
    for part in (header or "").split(","):
        m = _TAG.fullmatch(part.strip())
        if m is None or m.group(1) == "*":
            continue
        try:
            q = float(m.group(2)) if m.group(2) else 1.0
        except ValueError:
            continue
        if q > 0 and (best is None or q > best[0]):
            best = (q, m.group(1).lower())
    if best is None:
        return None
    return "zh" if best[1].startswith("zh") else "en"


def item_language(item: Item | None) -> Lang:
    """The catalog item's ``language`` (``zh*`` → Chinese), else the script of its title."""
    if item is None:
        return "en"
    if item.language:
        return "zh" if item.language.lower().startswith("zh") else "en"
    return "zh" if script_of(item.title or "") == "han" else "en"


def shorten(text: str, lang: Lang) -> str:
    limit = MAX_TITLE.get(lang, 40)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def render(key: str, lang: Lang, *, item: str | None = None, label: str | None = None) -> str:
    """The sentence for template ``key`` in ``lang``, naming ``item`` (a title) or ``label``
    when given; never empty."""
    table = TEMPLATES.get(lang, TEMPLATES["en"])
    forms = table.get(key) or table["explore"]
    name = item if "{item}" in forms["named"] else label
    if not name:
        return forms[""]
    return forms["named"].format(item=shorten(name, lang), label=shorten(name, lang))
