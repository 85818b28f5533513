"""The panel on a phone (390×844) in Chromium: no page wider than the screen, the whole navigation and
Log out reachable, wide tables scrolling inside their cards; and, on every page, accessible names for
meters and WCAG AA contrast (4.5:1) for every badge, computed from the page's own styles."""

from __future__ import annotations

import pytest

from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from tests.browser.conftest import SCREENSHOTS, login
from tests.browser.seed import panel_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH, HEIGHT = 390, 844
AA = 4.5

# Every <meter>'s accessible name: aria-label, aria-labelledby, a <label> or a title.
METER_NAMES = """() => [...document.querySelectorAll('meter')].map((m) => {
  const byIds = (m.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean)
    .map((id) => (document.getElementById(id) || {}).textContent || '').join(' ');
  const labels = [...(m.labels || [])].map((l) => l.textContent).join(' ');
  return { name: (m.getAttribute('aria-label') || byIds || labels || m.getAttribute('title') || '').trim(),
           html: m.outerHTML.slice(0, 120) };
})"""

# Contrast of every badge's text against what is really behind it: the badge's own translucent
# background composited over its ancestors' backgrounds down to the first opaque one (WCAG 2.x).
BADGE_CONTRAST = """() => {
  const parse = (value) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(value);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let color = [255, 255, 255, 1];
    for (const layer of layers.reverse()) color = over(layer, color);
    return color;
  };
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  return [...document.querySelectorAll('.badge')].filter((b) => b.offsetParent !== null).map((badge) => {
    const back = behind(badge);
    const text = over(parse(getComputedStyle(badge).color), back);
    const [hi, lo] = [luminance(text), luminance(back)].sort((a, b) => b - a);
    return { cls: badge.className, text: badge.textContent.trim(), ratio: (hi + 0.05) / (lo + 0.05) };
  });
}"""

INSIDE = """(el) => { const r = el.getBoundingClientRect();
  return { x: r.left, y: r.top, right: r.right, bottom: r.bottom, visible: r.width > 0 && r.height > 0 }; }"""


def wait_drawn(page) -> None:
    """Every chart the page has is drawn (at the phone's width: Plotly sizes a chart by its container)."""
    page.wait_for_function("() => [...document.querySelectorAll('[data-figure]')]"
                           ".every((el) => el.querySelector('.main-svg'))")


@pytest.fixture
def phone(browser, live_url):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, base_url=live_url,
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def _pages(history: dict) -> list[str]:
    """The overview, tasks, model, run (finished and running), hormones and configuration pages."""
    return ["/", "/tasks/", f"/models/{history['model'].pk}/", f"/runs/{history['runs'][-1].pk}/",
            f"/runs/{history['running'].pk}/", f"/runs/{history['rejected'].pk}/", "/hormones/", "/config/"]


def test_every_page_fits_a_phone_and_its_navigation_is_reachable(phone, operator):
    history = panel_history()
    login(phone, "alice", "alice-pass-123")
    for path in _pages(history):
        phone.goto(path)
        wait_drawn(phone)
        width = phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= WIDTH, f"{path} is {width} px wide on a {WIDTH} px screen"
        phone.evaluate("() => window.scrollTo(0, 0)")
        links = phone.locator("header.topbar nav a")
        assert links.count() >= 5, path  # Overview, Tasks, Hormones, Configuration, Admin (and any added since)
        for i in range(links.count()):
            box = links.nth(i).evaluate(INSIDE)
            name = links.nth(i).inner_text()
            assert box["visible"] and 0 <= box["x"] and box["right"] <= WIDTH, (path, name, box)
            assert 0 <= box["y"] and box["bottom"] <= HEIGHT, (path, name, box)
        logout = phone.get_by_role("button", name="Log out")
        assert logout.is_visible(), path
        box = logout.evaluate(INSIDE)
        assert 0 <= box["x"] and box["right"] <= WIDTH and 0 <= box["y"] and box["bottom"] <= HEIGHT, (path, box)
    assert phone.errors == []


def test_wide_tables_scroll_inside_their_card(phone, operator):
    history = panel_history()
    login(phone, "alice", "alice-pass-123")
    phone.goto(f"/models/{history['model'].pk}/")
    wait_drawn(phone)
    card = phone.locator("#versions")
    sizes = card.evaluate("(el) => ({ scroll: el.scrollWidth, client: el.clientWidth, "
                          "overflow: getComputedStyle(el).overflowX })")
    assert sizes["scroll"] > sizes["client"]  # the lineage table is wider than the phone...
    assert sizes["overflow"] == "auto"  # ...and scrolls inside its card
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= WIDTH  # not the page
    card.evaluate("(el) => { el.scrollLeft = el.scrollWidth; }")
    assert card.evaluate("(el) => el.scrollLeft") > 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    phone.goto("/")
    wait_drawn(phone)
    phone.wait_for_timeout(300)  # let Plotly finish its transitions
    phone.screenshot(path=str(SCREENSHOTS / "phone.png"), full_page=True)


def test_meters_are_named_and_badges_meet_aa_contrast(phone, operator):
    history = panel_history()
    ImprovementRun.objects.create(model=history["model"], strategy="distillation", status=RunStatus.FAILED,
                                  error="RuntimeError: out of memory", progress=0.3)
    login(phone, "alice", "alice-pass-123")
    seen: set[str] = set()
    meters = 0
    for path in _pages(history):
        phone.goto(path)
        for meter in phone.evaluate(METER_NAMES):
            assert meter["name"], (path, meter["html"])
            meters += 1
        for badge in phone.evaluate(BADGE_CONTRAST):
            assert badge["ratio"] >= AA, (path, badge)
            seen.update(badge["cls"].split())
    assert meters >= 6  # the fleet's health and one per hormone
    # The badges the report found too faint were among those measured.
    assert {"s-failed", "s-rejected", "s-promoted", "s-running", "i-neural"} <= seen, seen
