"""The dashboard in a real browser: headless Debian Chromium driven by Playwright, against
`shelfwise serve` on the demo shop (imported and trained by `shelfwise demo`), with real traffic
posted over HTTP first. Screenshots of every page in both languages go to
``var/test-artifacts/dashboard/``. Chromium comes from ``scripts/setup-browser.sh`` (run by
``make test``); without it these tests skip and say so."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelfwise.cli.demo_cmd import demo_config_path
from tests.helpers import free_port, wait_for_health

CHROMIUM = Path(os.environ.get("SHELFWISE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "dashboard"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {"overview": "/dashboard", "shopper": "/dashboard/shopper?user={user}",
         "item": "/dashboard/item?item={item}", "search": "/dashboard/search?q=mario&user={user}",
         "experiments": "/dashboard/experiments",
         "promotions": "/dashboard/promotions?candidate=egreedy",
         "evaluation": "/dashboard/evaluation"}
WITH_PLOTS = {"overview", "item", "experiments", "promotions", "evaluation"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=(
    f"no Chromium at {CHROMIUM}: run scripts/setup-browser.sh (make test does, as root)"))


@dataclass
class Live:
    base: str
    key: str
    user: str
    item: str


def _run(*args: str, timeout: float) -> str:
    out = subprocess.run([sys.executable, "-m", "shelfwise", *args], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _traffic(base: str, key: str, users: list[str]) -> None:
    """Feeds with clicks and carts, searches, promotions with redemptions, an experiment."""
    with httpx.Client(base_url=base, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.post("/v1/promotions", json={"promotions": [
            {"id": "points", "text": "Double points on your next game"},
            {"id": "bundle", "text": "主机游戏套装 9 折"}]}).status_code == 200
        assert http.post("/v1/experiments", json={
            "id": "traffic-exp", "surfaces": ["feed"], "variants": [
                {"name": "control", "share": 0.5},
                {"name": "more-explore", "share": 0.5, "overrides": {"explore": 3}}]}
        ).status_code in (200, 201)
        assert http.post("/v1/experiments/traffic-exp/start").status_code == 200
        for k, user in enumerate(users):
            feed = http.get(f"/v1/users/{user}/feed", params={"n": 10}).json()
            events: list[dict[str, Any]] = [  # 0, 1 or 2 clicks: CTRs differ by user
                {"type": "click", "user_id": user, "item_id": feed["items"][j]["item_id"],
                 "request_id": feed["request_id"]} for j in range((k * 7) % 3)]
            events.append({"type": "view", "user_id": user,
                           "item_id": feed["items"][3]["item_id"]})
            if k % 4 == 0:
                events.append({"type": "cart", "user_id": user,
                               "item_id": feed["items"][k % 3]["item_id"]})
            chosen = http.post(f"/v1/users/{user}/promotions", json={}).json()
            if chosen["promotions"] and k % 3 == 0:
                events.append({"type": "promotion_redeemed", "user_id": user,
                               "request_id": chosen["request_id"], "context": {
                                   "promotion_id": chosen["promotions"][0]["promotion_id"]}})
            assert http.post("/v1/events", json={"events": events}).status_code == 200
            assert http.post("/v1/search", json={"query": "mario" if k % 2 else "赛车游戏",
                                                 "user_id": user}).status_code == 200
        assert http.post("/v1/experiments", json={
            "id": "browser-exp", "surfaces": ["feed"], "variants": [
                {"name": "control", "share": 0.5},
                {"name": "varied", "share": 0.5, "overrides": {"diversity": 0.5}}]}
        ).status_code in (200, 201)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("dashboard-browser") / "demo"
    _run("demo", "--no-serve", "--workdir", str(work), "--set",
         'evaluate.models=["popularity", "cooccurrence", "feed"]', timeout=400)
    store = f"sqlite:///{work / 'shelfwise.db'}"
    key = _run("keys", "create", "--scope", "admin", "--name", "browser test", "--store",
               store, timeout=60).strip().splitlines()[-1]
    with sqlite3.connect(work / "shelfwise.db") as db:
        users = [r[0] for r in db.execute(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY COUNT(*) DESC LIMIT 24")]
        item = db.execute("SELECT item_id FROM events WHERE item_id IS NOT NULL GROUP BY "
                          "item_id ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0]
    port = free_port()
    log = work / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shelfwise", "serve", "--config", str(demo_config_path()),
             "--store", store, "--bundles", str(work / "bundles"), "--port", str(port),
             "--set", "serve.exploration.slots=2",
             "--set", f"serve.dashboard.results={json.dumps([str(work)])}"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc, 120, log.read_text)
        _traffic(base, key, users)
        yield Live(base, key, users[0], str(item))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, live: Live) -> Iterator[Any]:
    """A signed-in page (through the sign-in form) that records console errors."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{live.base}/dashboard/login")
    pg.fill("input[name=key]", live.key)
    pg.click("form[action='/dashboard/login'] button")
    pg.wait_for_url(f"{live.base}/dashboard")
    pg.errors = errors
    yield pg
    context.close()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_page_loads_without_errors_and_draws_its_plots(page: Any, live: Live,
                                                             lang: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        url = live.base + path.format(user=live.user, item=live.item)
        response = page.goto(url + ("&" if "?" in url else "?") + f"lang={lang}")
        assert response is not None and response.status == 200, (name, response)
        page.wait_for_load_state("networkidle")
        assert page.locator("html").get_attribute("lang") == ("zh-CN" if lang == "zh"
                                                              else "en")
        if name in WITH_PLOTS:
            page.wait_for_selector(".plot svg.main-svg", timeout=15_000)
            drawn = page.locator(".plot svg.main-svg").count()
            assert drawn > 0, f"{name}: no plot drawn"
            points = page.evaluate("""() => [...document.querySelectorAll('.plot')]
                .map(p => (p.data || []).reduce((n, t) => n + (t.y || t.x || []).length, 0))""")
            assert max(points) > 0, f"{name}: plots are empty"
        page.screenshot(path=str(ARTIFACTS / f"{name}-{lang}.png"), full_page=True)
        assert page.errors == [], f"{name}: console errors {page.errors}"


def test_shopper_feed_is_explained_and_the_slider_reranks_it(page: Any, live: Live) -> None:
    page.goto(f"{live.base}/dashboard/shopper?user={live.user}&lang=zh")
    items = page.locator("#feed li[data-item]")
    assert items.count() >= 5
    for k in range(items.count()):
        assert items.nth(k).locator(".why").inner_text().strip(), f"item {k} has no reason"
    before = [items.nth(k).get_attribute("data-item") for k in range(items.count())]
    page.evaluate("""() => { const s = document.getElementById('diversity');
        s.value = '1'; s.dispatchEvent(new Event('input')); }""")
    page.wait_for_selector("#feed ol[data-diversity='1.0']")
    after = page.locator("#feed li[data-item]").evaluate_all(
        "els => els.map(e => e.dataset.item)")
    assert after != before, "diversity 1 left the feed as it was"
    assert "diversity=1" in page.url
    assert page.errors == []


def test_search_playground_shows_both_orders(page: Any, live: Live) -> None:
    page.goto(f"{live.base}/dashboard/search?q=mario+kart&user={live.user}")
    fused = page.locator("#fused-order li[data-item]")
    personal = page.locator("#personal-order li[data-item]")
    assert fused.count() >= 5 and personal.count() >= 5
    assert page.locator("#personal-order .contrib").count() == personal.count()


def test_an_experiment_started_in_the_page_runs_in_the_api(page: Any, live: Live) -> None:
    page.goto(f"{live.base}/dashboard/experiments?lang=en")
    card = page.locator("section[data-experiment='browser-exp']")
    assert card.get_attribute("data-status") == "draft"
    card.locator("button.start").click()
    page.wait_for_selector("section[data-experiment='browser-exp'][data-status='running']")
    status = httpx.get(f"{live.base}/v1/experiments/browser-exp", headers={
        "Authorization": f"Bearer {live.key}"}).json()["status"]
    assert status == "running"


def test_without_the_admin_key_the_page_is_refused(browser: Any, live: Live) -> None:
    context = browser.new_context()
    pg = context.new_page()
    response = pg.goto(f"{live.base}/dashboard/experiments")
    assert response is not None and response.status == 401
    assert pg.locator("input[name=key]").is_visible()
    pg.fill("input[name=key]", "not-a-key")
    pg.click("form[action='/dashboard/login'] button")
    assert pg.locator(".error").is_visible()
    pg.fill("input[name=key]", live.key)  # the form takes the reader where they were going
    pg.click("form[action='/dashboard/login'] button")
    pg.wait_for_url(f"{live.base}/dashboard/experiments")
    context.close()
