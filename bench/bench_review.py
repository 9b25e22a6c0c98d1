"""Review console benchmark: item-page paint, keyboard decisions per minute, thumbnail cost.

Run with ``make bench-review``. Three measurements, each against an anchor in the same run:

1. **Time to first paint of the item page** with 10 candidates, on a queue of 5,000 items:
   the store (SQLite on tmpfs, so seeding is quick) is filled by ``tests/support/review_seed``
   with 5,000 pending items of 10 stored candidates each, every image with a real 256 px WebP
   thumbnail; the app runs under uvicorn on 127.0.0.1; Debian's Chromium (Playwright, the test
   flags) opens item pages and reads ``first-contentful-paint`` from the Paint Timing API
   and the load event end from Navigation Timing. Anchor: the login page (no store, no images),
   opened the same way, interleaved with the item pages.
2. **Decisions per minute with the keyboard**: one reviewer presses ``N`` on item after item
   (each press posts the decision, the server claims the next item and the browser paints it);
   the rate counts only decisions whose next page has painted. Anchor: the same number of plain
   page loads of the next item (``/review/next``) without deciding, so the ratio is the cost of
   the decision itself.
3. **Thumbnail cost at ingest**: ``digest`` (decode + hash, where the thumbnail is made) and the
   whole ``DhashService.ingest`` (plus matching and the store write, thumbnail row included) on
   the same photo-like JPEGs with ``DHASH_THUMBNAIL_SIDE=256`` against its anchor ``0``,
   interleaved per file; medians per class and the median of per-file ratios.

The browser and the server share the machine's two cores, so absolute figures are a floor.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from tests.support.api import settings_for  # noqa: E402
from tests.support.corpus import photo_jpeg  # noqa: E402
from tests.support.live_server import running_app, wait_ready  # noqa: E402
from tests.support.review_seed import seed_store  # noqa: E402

from dhash_service.api.app import create_app  # noqa: E402
from dhash_service.digest import digest  # noqa: E402
from dhash_service.extraction import Limits  # noqa: E402
from dhash_service.service import DhashService  # noqa: E402
from dhash_service.store import schema  # noqa: E402

QUEUE = 5000
CANDIDATES = 10
PAINT_SAMPLES = 30
DECISIONS = 120
REPS = 5
REVIEWER = ("bench", "bench-token-0a1b2c")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAINT = """() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return [fcp ? fcp.startTime : null, nav ? nav.loadEventEnd : null];
}"""


def paint(page: Page, path: str) -> tuple[float, float]:
    page.goto(path, wait_until="load")
    page.wait_for_function(
        "() => performance.getEntriesByName('first-contentful-paint').length > 0"
    )
    fcp, load = page.evaluate(PAINT)
    return float(fcp), float(load)


def current_id(page: Page) -> str:
    return str(page.get_attribute("[data-item-id]", "data-item-id"))


def keyboard_rate(page: Page, count: int) -> float:
    """Decisions per minute: press N, wait until the next item's page has painted."""
    page.goto("/review/next", wait_until="load")
    started = time.perf_counter()
    for _ in range(count):
        before = current_id(page)
        page.keyboard.press("n")
        page.wait_for_function(
            "(id) => { const el = document.querySelector('[data-item-id]');"
            " return el && el.dataset.itemId !== id && document.readyState === 'complete'; }",
            arg=before,
        )
    return count / (time.perf_counter() - started) * 60


def reload_rate(page: Page, count: int) -> float:
    """The anchor: the same page loads (claim + render + paint), no decision."""
    started = time.perf_counter()
    for _ in range(count):
        page.goto("/review/next", wait_until="load")
    return count / (time.perf_counter() - started) * 60


def browser_figures(url: str) -> dict[str, float]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("Reviewer name").fill(REVIEWER[0])
        page.get_by_label("Token").fill(REVIEWER[1])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/review")
        item_fcp, item_load, login_fcp, login_load = [], [], [], []
        anon = browser.new_context(base_url=url).new_page()
        for n in range(PAINT_SAMPLES):
            item = 4000 + n * 7  # deep in the queue, not the first rows
            if n % 2:
                a, b = paint(anon, "/login"), paint(page, f"/review/{item}")
            else:
                b, a = paint(page, f"/review/{item}"), paint(anon, "/login")
            login_fcp.append(a[0])
            login_load.append(a[1])
            item_fcp.append(b[0])
            item_load.append(b[1])
        thumbs = page.locator("img[src^='/review/thumbs/']").count()
        rates = []
        anchors = []
        for rep in range(2):
            if rep % 2:
                anchors.append(reload_rate(page, DECISIONS // 2))
                rates.append(keyboard_rate(page, DECISIONS // 2))
            else:
                rates.append(keyboard_rate(page, DECISIONS // 2))
                anchors.append(reload_rate(page, DECISIONS // 2))
        browser.close()
    return {
        "item_fcp_ms": statistics.median(item_fcp),
        "item_fcp_p90_ms": statistics.quantiles(item_fcp, n=10)[-1],
        "item_load_ms": statistics.median(item_load),
        "login_fcp_ms": statistics.median(login_fcp),
        "login_load_ms": statistics.median(login_load),
        "thumbs_on_item_page": float(thumbs),
        "decisions_per_minute": statistics.median(rates),
        "page_loads_per_minute": statistics.median(anchors),
    }


def thumbnail_cost(tmp: Path) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per class: digest and whole ingest (``DhashService.ingest``: decode, hash, match, store in
    SQLite on tmpfs), thumbnails on and off, interleaved per file; fastest of ``REPS`` per file
    for digest, one ingest per file and service (each file is new to both stores)."""
    classes = {"JPEG 640x480": (640, 480, 24), "JPEG 1920x1080": (1920, 1080, 12)}
    services = {}
    for label, side in (("on", 256), ("off", 0)):
        settings = settings_for(
            f"sqlite:///{tmp / f'ingest-{label}.sqlite3'}",
            tmp,
            thumbnail_side=side,
            decoder_processes=0,
            log_level="WARNING",
        )
        service = DhashService(settings)
        service.start()
        assert service.wait_until_ready(60)
        services[label] = service
    limits = {"on": Limits(thumbnail_side=256), "off": Limits(thumbnail_side=0)}
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    try:
        for name, (w, h, files) in classes.items():
            timings: dict[str, dict[str, list[float]]] = {
                "digest": {"on": [], "off": []},
                "ingest": {"on": [], "off": []},
            }
            for seed in range(files):
                data = photo_jpeg(w, h, seed + 100 * w)
                best = {"on": float("inf"), "off": float("inf")}
                for rep in range(REPS):
                    for label in ("on", "off") if rep % 2 else ("off", "on"):
                        started = time.perf_counter()
                        digest(data, limits=limits[label])
                        best[label] = min(best[label], time.perf_counter() - started)
                for label in ("on", "off") if seed % 2 else ("off", "on"):
                    timings["digest"][label].append(best[label] * 1000)
                    started = time.perf_counter()
                    services[label].ingest(data, filename=f"{seed}.jpg")
                    timings["ingest"][label].append((time.perf_counter() - started) * 1000)
            out[name] = {
                kind: (
                    statistics.median(t["off"]),
                    statistics.median(t["on"]),
                    statistics.median(a / b for a, b in zip(t["on"], t["off"], strict=True)),
                )
                for kind, t in timings.items()
            }
    finally:
        for service in services.values():
            service.stop()
    return out


def main() -> None:
    """``python bench/bench_review.py [thumbnails]``: everything, or only the thumbnail cost."""
    if sys.argv[1:] == ["thumbnails"]:
        with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
            print_thumbnail_cost(Path(tmp))
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        url = f"sqlite:///{Path(tmp) / 'dhash.sqlite3'}"
        schema.upgrade(url)
        started = time.perf_counter()
        seed_store(url, QUEUE, candidates=CANDIDATES)
        print(
            f"seeded {QUEUE} items x {CANDIDATES} candidates"
            f" in {time.perf_counter() - started:.0f} s"
        )
        settings = settings_for(
            url,
            Path(tmp),
            reviewer_tokens=[":".join(REVIEWER)],
            decoder_processes=0,
            log_level="WARNING",
        )
        with running_app(create_app(settings)) as base:
            wait_ready(base)
            figures = browser_figures(base)
        for key, value in figures.items():
            print(f"{key:24} {value:8.1f}")
        print(f"item / login first paint: {figures['item_fcp_ms'] / figures['login_fcp_ms']:.2f}")
        print(
            "decisions / plain loads per minute: "
            f"{figures['decisions_per_minute'] / figures['page_loads_per_minute']:.2f}"
        )
        print_thumbnail_cost(Path(tmp))


def print_thumbnail_cost(tmp: Path) -> None:
    print("thumbnail cost (median ms without, with; median per-file ratio):")
    for name, kinds in thumbnail_cost(tmp).items():
        for kind, (without, with_t, ratio) in kinds.items():
            print(f"  {name:16} {kind:7} {without:7.2f} {with_t:7.2f}  x{ratio:.3f}")


if __name__ == "__main__":
    main()
