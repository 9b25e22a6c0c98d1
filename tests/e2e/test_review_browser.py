"""The review console in Debian's real Chromium (driven by Playwright), against a real server.

One server (the app under uvicorn on 127.0.0.1, SQLite store in a temp dir) and one browser per
module; each test works on its own items (its own ``source``), seeded through the real API, so
the thumbnails are the ones ingest made. After the clicks the store, the audit table and
``/metrics`` are checked. Screenshots of the queue and the item page go to ``docs/img/``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from dhash_service.api.app import create_app
from dhash_service.api.reviewers import SESSION_COOKIE
from tests.support.api import settings_for
from tests.support.live_server import REPO, running_app, wait_ready
from tests.support.review_seed import review_band_pairs, seed_store, seed_via_api

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALICE = ("alice", "alice-token-7f3a9c")
BOB = ("bob", "bob-token-51e08d")
IMG = REPO / "docs" / "img"
# Screenshots are test artifacts (under pytest's temp dir, or DHASH_TEST_ARTIFACTS); with
# DHASH_UPDATE_DOC_SCREENSHOTS=1 they replace the ones docs/review.md shows.
CAROL = ("carol", "carol-token-c4e2b6")
HOSTILE = 'look <script>alert("x")</script> & <img src=x onerror=alert(1)>'
SCREENSHOTS = ("review-queue.png", "review-item.png", "review-item-difference.png")
SOURCES = {"click": 2, "keys": 3, "pair": 4, "bulk": 2, "csrf": 1, HOSTILE: 1}


@dataclass
class Console:
    url: str
    database: str
    ids: dict[str, list[int]]

    def rows(self, sql: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        engine = sa.create_engine(self.database)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(sql), params).all())
        finally:
            engine.dispose()

    def status(self, review_id: int) -> tuple[str, str | None]:
        [(status, reviewer)] = self.rows(
            "SELECT status, reviewer FROM review_items WHERE id = :id", id=review_id
        )
        return str(status), reviewer if reviewer is None else str(reviewer)

    def audit(self, review_id: int) -> list[tuple[str, str, dict[str, str]]]:
        found = self.rows(
            "SELECT actor, action, detail FROM audit_events WHERE subject_type = 'review_item' "
            "AND subject_id = :id ORDER BY id",
            id=review_id,
        )
        return [(str(a), str(b), json.loads(str(c))) for a, b, c in found]

    def queue_gauge(self) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        [value] = re.findall(r"^dhash_low_confidence_queue_length (\S+)$", text, re.M)
        return float(value)

    def pending(self) -> int:
        [(count,)] = self.rows("SELECT count(*) FROM review_items WHERE status = 'pending'")
        return int(str(count))


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    database = f"sqlite:///{tmp / 'dhash.sqlite3'}"
    settings = settings_for(
        database,
        tmp,
        reviewer_tokens=[":".join(ALICE), ":".join(BOB), ":".join(CAROL)],
        decoder_processes=0,
    )
    with running_app(create_app(settings)) as url:
        wait_ready(url)
        ids: dict[str, list[int]] = {}
        pairs = review_band_pairs(sum(SOURCES.values()))
        for source, count in SOURCES.items():
            ids[source] = seed_via_api(url, (next(pairs) for _ in range(count)), source)
        ids["look"] = ids.pop(HOSTILE)
        seed_store(database, 1, candidates=10, pool=2)  # one item with ten stored candidates
        console = Console(url, database, ids)
        [(many,)] = console.rows("SELECT max(id) FROM review_items")
        ids["many"] = [int(str(many))]
        yield console


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("DHASH_UPDATE_DOC_SCREENSHOTS") == "1":
        return IMG
    chosen = os.environ.get("DHASH_TEST_ARTIFACTS")
    folder = Path(chosen) / "review" if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # the test setup installs Debian's package when it is missing
        subprocess.run(["bash", str(REPO / "scripts/dev/system-deps.sh")], check=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def alice(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    context = logged_in(browser, console, ALICE)
    yield context
    context.close()


@pytest.fixture(scope="module")
def bob(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    context = logged_in(browser, console, BOB)
    yield context
    context.close()


def logged_in(browser: Browser, console: Console, who: tuple[str, str]) -> BrowserContext:
    context = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Reviewer name").fill(who[0])
    page.get_by_label("Token").fill(who[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("reviewer")).to_have_text(who[0])
    page.close()
    return context


def item_id(page: Page) -> int:
    return int(page.get_by_test_id("item").get_attribute("data-item-id") or 0)


def test_a_page_or_thumbnail_without_a_session_goes_to_login(
    browser: Browser, console: Console
) -> None:
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    review_id = console.ids["look"][0]
    page.goto(f"/review/{review_id}")
    assert re.search(r"/login\?next=%2Freview%2F\d+$", page.url)
    expect(page.get_by_role("heading", name="Log in to review")).to_be_visible()
    for path in ("/review", "/review/1", "/review/thumbs/1", "/review/decisions.csv"):
        answer = httpx.get(console.url + path, timeout=10)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    page.get_by_label("Reviewer name").fill(ALICE[0])
    page.get_by_label("Token").fill("wrong-token-123")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That name and token do not match a reviewer.")
    context.close()


def test_session_cookie_is_httponly_strict_and_expires(alice: BrowserContext) -> None:
    [cookie] = [c for c in alice.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert not cookie["secure"]  # plain HTTP here; over TLS it is Secure


def test_queue_lists_pending_items_oldest_first_with_what_they_wait_for(
    alice: BrowserContext, console: Console, shots: Path
) -> None:
    page = alice.new_page()
    page.goto("/review?source=look")
    expect(page.get_by_test_id("queue-count")).to_have_text("1")
    rows = page.get_by_test_id("queue-row")
    assert [int(r.get_attribute("data-id") or 0) for r in rows.all()] == console.ids["look"]
    expect(rows.first).to_contain_text("review band")
    expect(rows.first).to_contain_text("a reviewer")
    expect(rows.first.locator("td.source")).to_have_text(HOSTILE)  # shown as text, not markup
    assert page.locator("td.source script, td.source img").count() == 0
    page.goto("/review")
    page.screenshot(path=str(shots / "review-queue.png"))
    page.goto(f"/review/{console.ids['look'][0]}?source=look")
    expect(page.locator("figure.query img")).to_have_js_property("complete", True)
    natural = page.locator("figure.candidate img").evaluate("img => img.naturalWidth")
    assert natural == 256  # the WebP thumbnail ingest stored, served to the session
    page.screenshot(path=str(shots / "review-item.png"))
    page.keyboard.press("d")
    expect(page.locator("#compare")).to_have_attribute("data-mode", "difference")
    page.screenshot(path=str(shots / "review-item-difference.png"))
    page.get_by_label("Blur until hover").check()
    page.reload()  # the wellness choice is remembered by this browser
    expect(page.locator("body")).to_have_class(re.compile(r"\bwellness-blur\b"))
    blurred = page.locator("figure.query img").evaluate("img => getComputedStyle(img).filter")
    assert blurred.startswith("blur(")
    page.get_by_label("Blur until hover").uncheck()
    assert all((shots / name).stat().st_size > 10_000 for name in SCREENSHOTS)
    page.close()


def test_an_item_shows_every_candidate_to_compare_with(
    alice: BrowserContext, console: Console
) -> None:
    page = alice.new_page()
    [review_id] = console.ids["many"]
    page.goto(f"/review/{review_id}")
    picks = page.locator("button.pick")
    expect(picks).to_have_count(10)
    third = picks.nth(2)
    chosen = third.get_attribute("data-image-id")
    third.click()
    expect(page.locator("#candidate-caption")).to_contain_text(f"library image #{chosen} ")
    expect(page.locator("figure.candidate img")).to_have_attribute(
        "src", f"/review/thumbs/{chosen}"
    )
    expect(page.locator("#stack-over")).to_have_attribute("src", f"/review/thumbs/{chosen}")
    page.close()


def test_decide_by_click_then_the_next_item_opens(alice: BrowserContext, console: Console) -> None:
    page = alice.new_page()
    first, second = console.ids["click"]
    page.goto("/review/next?source=click")
    assert item_id(page) == first
    page.get_by_role("button", name="Confirm match").click()
    page.wait_for_url(re.compile(rf"/review/{second}\?source=click$"))
    page.get_by_role("button", name="Not a match").click()
    page.wait_for_url(re.compile(r"/review\?source=click&done=1$"))
    expect(page.get_by_role("status")).to_have_text("Nothing left to review in this selection.")
    assert console.status(first) == ("confirmed", "alice")
    assert console.status(second) == ("rejected", "alice")
    assert console.audit(first) == [
        ("alice", "review_confirm", {"status": "confirmed", "via": "console"})
    ]
    assert console.queue_gauge() == console.pending()
    page.close()


def test_decide_by_keyboard_with_the_keys_shown(bob: BrowserContext, console: Console) -> None:
    page = bob.new_page()
    first, second, third = console.ids["keys"]
    page.goto("/review/next?source=keys")
    expect(page.locator(".keys")).to_contain_text("C confirm match")
    before = console.queue_gauge()
    page.keyboard.press("n")
    page.wait_for_url(re.compile(rf"/review/{second}\?"))
    page.keyboard.press("s")  # skip: not decided, not offered to bob again
    page.wait_for_url(re.compile(rf"/review/{third}\?"))
    page.keyboard.press("c")
    page.wait_for_url(re.compile(r"/review\?source=keys&done=1$"))
    assert console.status(first) == ("rejected", "bob")
    assert console.status(second) == ("pending", None)
    assert console.status(third) == ("confirmed", "bob")
    assert console.queue_gauge() == before - 2 == console.pending()
    page.close()


def test_two_reviewers_never_get_the_same_item(
    alice: BrowserContext, bob: BrowserContext, console: Console
) -> None:
    a, b = alice.new_page(), bob.new_page()
    seen: list[tuple[int, int]] = []
    a.goto("/review/next?source=pair")
    b.goto("/review/next?source=pair")
    seen.append((item_id(a), item_id(b)))
    b.goto(f"/review/{item_id(a)}")  # bob opens alice's item by its address
    expect(b.get_by_test_id("claimed")).to_contain_text("Claimed by alice")
    expect(b.get_by_role("button", name="Confirm match")).to_be_disabled()
    b.go_back()
    b.reload()  # bob's own claim still holds: he gets his item back
    for page in (a, b):
        page.keyboard.press("c")
    a.wait_for_url(re.compile(r"/review/\d+\?source=pair$"))
    b.wait_for_url(re.compile(r"/review/\d+\?source=pair$"))
    seen.append((item_id(a), item_id(b)))
    assert all(x != y for x, y in seen)
    assert len({i for pair in seen for i in pair}) == 4 == len(console.ids["pair"])
    claims = console.rows("SELECT review_id, reviewer FROM review_claims")
    assert sorted(str(r[1]) for r in claims if r[0] in console.ids["pair"]) == ["alice", "bob"]
    a.close()
    b.close()


def test_a_forged_post_without_the_csrf_token_is_refused(
    alice: BrowserContext, console: Console
) -> None:
    [review_id] = console.ids["csrf"]
    forged = alice.request.post(
        f"/review/{review_id}/decide", form={"action": "confirm"}, max_redirects=0
    )
    assert forged.status == 403 and "CSRF" in forged.text()
    wrong = alice.request.post(
        f"/review/{review_id}/decide", form={"action": "confirm", "csrf": "x" * 43}
    )
    assert wrong.status == 403
    assert console.status(review_id) == ("pending", None) and console.audit(review_id) == []
    too_big = alice.request.post(
        f"/review/{review_id}/decide", form={"action": "confirm", "query": "x" * 100_000}
    )
    assert too_big.status == 413  # bodies are bounded before any route reads them


def test_bulk_action_on_a_filtered_selection_and_the_exports(
    alice: BrowserContext, console: Console
) -> None:
    context = alice
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/review?source=bulk")
    expect(page.get_by_test_id("queue-count")).to_have_text("2")
    page.get_by_label("tick all on this page").check()
    page.get_by_role("button", name="Not a match").click()
    expect(page.get_by_test_id("bulk-result")).to_have_text("reject: 2 decided")
    for review_id in console.ids["bulk"]:
        assert console.status(review_id) == ("rejected", "alice")
        assert console.audit(review_id)[-1][2]["via"] == "bulk"
    page.goto("/review/decisions")
    expect(page.get_by_test_id("decision-row").first).to_contain_text("alice")
    exported = context.request.get("/review/decisions.csv")
    assert exported.headers["content-disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(exported.text())))
    bulk = {int(r["review_id"]) for r in rows if r["via"] == "bulk"}
    assert bulk == set(console.ids["bulk"])
    as_json = json.loads(context.request.get("/review/decisions.json").text())
    assert len(as_json) == len(rows) and {r["event_id"] for r in as_json} == {
        int(r["event_id"]) for r in rows
    }
    page.goto("/review/stats")
    expect(page.get_by_test_id("stats-row").first).to_be_visible()
    page.close()


def test_login_never_redirects_off_the_console(console: Console) -> None:
    with httpx.Client(base_url=console.url, timeout=10) as client:
        shown = client.get("/login", params={"next": "//evil.example/x"})
        assert "default-src 'none'" in shown.headers["content-security-policy"]
        form = shown.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        answer = client.post(
            "/login",
            data={
                "name": CAROL[0],
                "token": CAROL[1],
                "csrf": csrf.group(1),
                "next": "//evil.example/x",
            },
            headers={"X-Forwarded-Proto": "https"},  # as a TLS-terminating proxy on loopback says
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/review"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
        assert client.get("/review").status_code == 303  # a Secure cookie is not sent over http
        forged = client.post("/login", data={"name": CAROL[0], "token": CAROL[1]})
        assert forged.status_code == 200 and SESSION_COOKIE not in forged.headers.get(
            "set-cookie", ""
        )  # no login CSRF token: a fresh form, nobody logged in


def test_logout_ends_the_session_on_the_server(browser: Browser, console: Console) -> None:
    context = logged_in(browser, console, CAROL)
    [cookie] = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    page = context.new_page()
    page.goto("/review")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto("/review")
    assert "/login" in page.url
    replayed = httpx.get(
        console.url + "/review", cookies={SESSION_COOKIE: str(cookie["value"])}, timeout=10
    )
    assert replayed.status_code == 303  # the old cookie is worth nothing now
    context.close()
