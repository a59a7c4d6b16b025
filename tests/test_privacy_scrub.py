"""PII scrubbing: phones, e-mails, card and ID-card numbers masked in Chinese and English text,
product queries left alone, and nothing unmasked reaching the store through the HTTP API, the
impression log or ``shelfwise import`` (unless ``[privacy] scrub_pii = false``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shelfwise.cli.main import app as cli
from shelfwise.config import ShelfwiseConfig
from shelfwise.data.schemas import EventType
from shelfwise.privacy.scrub import (
    cn_id_valid,
    ean13_valid,
    luhn_valid,
    scrub_context,
    scrub_context_json,
    scrub_text,
    scrub_value,
)
from shelfwise.serving import create_app
from tests.conftest import two_group_frame
from tests.helpers import build


def with_luhn(prefix: str) -> str:
    """``prefix`` + the check digit that makes it pass Luhn."""
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


UNIONPAY_19 = with_luhn("622202123456789012")  # 19 digits, UnionPay's 62
assert len(UNIONPAY_19) == 19

MASKED = [
    # Chinese mobiles, with and without country code and separators
    ("13800138000", "[phone]"),
    ("我的手机号是13912345678，请回电", "我的手机号是[phone]，请回电"),
    ("电话：138 0013 8000", "电话：[phone]"),
    ("联系 138-0013-8000 张先生", "联系 [phone] 张先生"),
    ("+86 138 0013 8000", "[phone]"),
    ("+86-13800138000", "[phone]"),
    ("(+86)13800138000", "[phone]"),
    ("008613800138000", "[phone]"),
    ("landline 010-62345678 ext", "landline [phone] ext"),
    ("座机(0755)86013388", "座机[phone]"),
    # international (E.164-ish, with +)
    ("call me at +1 (415) 555-2671 tomorrow", "call me at [phone] tomorrow"),
    ("UK office +44 20 7946 0958", "UK office [phone]"),
    ("+4915123456789", "[phone]"),
    # e-mail
    ("send to jane.doe+shop@example.co.uk please", "send to [email] please"),
    ("邮箱zhang_san@qq.com谢谢", "邮箱[email]谢谢"),
    ("13800138000@163.com", "[email]"),
    # cards (Luhn-valid): Visa, Mastercard, Amex grouping, UnionPay 19 digits
    ("card 4111 1111 1111 1111 exp 12/27", "card [card] exp 12/27"),
    ("4111-1111-1111-1111", "[card]"),
    ("卡号5500000000000004", "卡号[card]"),
    ("amex 3782 822463 10005", "amex [card]"),
    (f"银联卡{UNIONPAY_19}", "银联卡[card]"),
    # Chinese resident ID (valid check character, upper or lower x)
    ("身份证号11010519491231002X", "身份证号[id]"),
    ("id 11010519491231002x ok", "id [id] ok"),
    # several at once
    ("13800138000 4111111111111111 a@b.cn", "[phone] [card] [email]"),
]

UNCHANGED = [
    "iphone 15 pro 256gb", "iPhone 15 Pro Max 1TB 钛金属", "2024款 小米手环8", "小米14 Ultra",
    "RTX 4090 24GB", "SM-G9980 手机壳", "SKU13800138000", "sku-8806094212345x", "B0C1H26C46",
    "120x200cm 床单", "尺寸 180*200cm", "¥1299.00", "$19.99 - $249.99", "A4纸 70g 500张",
    "Nike Air Max 270 React", "2024-05-15", "订单 2024-05-15 12:30", "iphone13 pro max",
    "EAN 4006381333931",  # a valid EAN-13 (and Luhn-valid): a barcode, not a card
    "6901234567892",  # Chinese EAN-13
    "4111111111111112",  # Luhn fails
    "1234567890123456",  # industry digit 1: not a payment card
    "110105194912310021",  # wrong ID check character
    "11010520991231002X",  # birth date in the future
    "1715623456789",  # a millisecond timestamp
    "12345678", "size 36-39", "3.1415926", "+1 2",
    "user@localhost", "@shelfwise 新品",
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_pii_is_masked(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_product_queries_and_codes_are_left_alone(text: str) -> None:
    assert scrub_text(text) == text


def test_checksums() -> None:
    assert cn_id_valid("11010519491231002X") and not cn_id_valid("110105194912310021")
    assert not cn_id_valid("11010519491332002X")  # month 13
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert ean13_valid("4006381333931") and not ean13_valid("4006381333932")


def test_nested_values_and_server_id_keys() -> None:
    ctx = {"note": "ring 13800138000", "n": 13800138000, "price": 1299, "flag": True,
           "nested": {"list": ["a@b.com", 3.5]}, "items": ["13800138000"],
           "cart": ["4111111111111111"], "surface": "feed"}
    out = scrub_context(ctx)
    assert out == {"note": "ring [phone]", "n": "[phone]", "price": 1299, "flag": True,
                   "nested": {"list": ["[email]", 3.5]}, "items": ["13800138000"],
                   "cart": ["4111111111111111"], "surface": "feed"}
    assert scrub_value({"phone": "+86 138 0013 8000"}) == {"phone": "[phone]"}
    text = json.dumps(ctx)
    assert json.loads(scrub_context_json(text)) == out
    plain = json.dumps({"page": 3, "query": "iphone 15"})
    assert scrub_context_json(plain) is plain


# ---- through the store: HTTP, impressions, import --------------------------------------------
PHONE, EMAIL, CARD, CN_ID = "13800138000", "jane.doe@example.com", "4111111111111111", \
    "11010519491231002X"
SECRETS = (PHONE, EMAIL, CARD, CN_ID, "138 0013 8000")


def stored_text(db: Path) -> str:
    """Every value of every table of a SQLite store, as one string."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        return "\n".join(str(row) for t in tables for row in conn.execute(f'select * from "{t}"'))


def shop(tmp_path: Path, **privacy: object) -> TestClient:
    url, bundles = build(two_group_frame(), tmp_path)
    cfg = ShelfwiseConfig.model_validate({"storage": {"url": url, "bundles": str(bundles)},
                                          "privacy": privacy})
    return TestClient(create_app(config=cfg))


def post_pii(client: TestClient) -> None:
    r = client.post("/v1/events", json={"events": [
        {"id": "c1", "type": "click", "user_id": "u1", "item_id": "a1",
         "context": {"note": f"回电 {PHONE}", "coupon_for": EMAIL}},
        {"id": "s1", "type": "search", "user_id": "u1", "query": f"refund card {CARD}"}]})
    assert r.status_code == 200, r.text
    r = client.post("/v1/users", json={"users": [
        {"id": "u1", "attributes": {"phone": "138 0013 8000", "id_card": CN_ID,
                                    "segment": "vip"}}]})
    assert r.status_code == 200, r.text
    r = client.post("/v1/search", json={"query": f"手机壳 {PHONE}", "user_id": "u1", "n": 3})
    assert r.status_code == 200, r.text
    client.app.state.engine.impressions.flush()  # type: ignore[attr-defined]


def test_nothing_unmasked_reaches_the_store_over_http(tmp_path: Path) -> None:
    client = shop(tmp_path)
    post_pii(client)
    text = stored_text(tmp_path / "shop.db")
    for secret in SECRETS:
        assert secret not in text
    store = client.app.state.store  # type: ignore[attr-defined]
    user = store.get_user("u1")
    assert user.attributes == {"phone": "[phone]", "id_card": "[id]", "segment": "vip"}
    events = {e.id: e for e in store.user_events("u1")}
    assert events["c1"].context == {"note": "回电 [phone]", "coupon_for": "[email]"}
    searches = store.user_events("u1", types=[EventType.SEARCH])
    assert {e.query for e in searches} == {"refund card [card]", "手机壳 [phone]"}
    shown = [e for e in store.events_of_type(EventType.IMPRESSION)
             if e.context.get("surface") == "search"]
    assert shown and all(e.context["query"] == "手机壳 [phone]" for e in shown)


def test_scrubbing_can_be_turned_off(tmp_path: Path) -> None:
    client = shop(tmp_path, scrub_pii=False)
    post_pii(client)
    text = stored_text(tmp_path / "shop.db")
    assert PHONE in text and EMAIL in text and CARD in text


def test_import_goes_through_the_same_scrubbing(tmp_path: Path) -> None:
    db = tmp_path / "import.db"
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"user_id": "u1", "type": "search", "query": f"客服 {PHONE}", "timestamp": 1704067200},
        {"user_id": "u1", "item_id": "a1", "type": "purchase", "timestamp": 1704067201,
         "context": {"invoice_email": EMAIL, "order": 1234}}]) + "\n", encoding="utf-8")
    users = tmp_path / "users.jsonl"
    users.write_text(json.dumps({"user_id": "u1", "attributes": {"card": CARD}}) + "\n",
                     encoding="utf-8")
    for path in (events, users):
        res = CliRunner().invoke(cli, ["import", str(path), "--store", f"sqlite:///{db}",
                                       "--no-progress"], env={})
        assert res.exit_code == 0, res.output
    text = stored_text(db)
    for secret in (PHONE, EMAIL, CARD):
        assert secret not in text
    assert "客服 [phone]" in text and "[email]" in text and "[card]" in text
