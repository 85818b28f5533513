"""Browser tests: the deployed web tier against the test database, and headless Chromium (Playwright).

* Mandatory when ``CI=true``: a missing Chromium or Playwright then fails the tests; elsewhere
  they are skipped with a message saying what to install.
* One web tier serves the whole session (started once the test database exists): ``manage.py
  serve`` with two gunicorn processes and daphne for the WebSockets on another port, so the
  pages' JavaScript connects across ports as it does in production. It reads the test SQLite file and a media folder shared with the tests, like a worker does
  (``tests.workers.worker_env``). The outbox relay is on and there is no Redis: the embedded mode.
* Tests use ``django_db(transaction=True)``: what a test writes is committed, so daphne (and a
  qcluster worker) see it.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
SERVER_START_S = 120


def _require_browser() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not missing:
        return
    message = "browser tests need " + " and ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; they are mandatory with CI=true", pytrace=False)
    pytest.skip(f"{message}; skipped because CI is not 'true'")


@pytest.fixture(scope="session")
def shared_media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-media")


@pytest.fixture(autouse=True)
def _media_shared_with_the_server(_isolated_storage, settings, shared_media):
    """Weights written by a test must be where daphne and the worker read them."""
    from django.core.files.storage import default_storage, storages
    from django.utils.functional import empty

    settings.MEDIA_ROOT = shared_media
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "models_registry.storage.AtomicFileSystemStorage", "OPTIONS": {"location": str(shared_media)}}}
    storages._storages = {}
    default_storage._wrapped = empty
    yield


@pytest.fixture(scope="session")
def live_url(django_db_setup, django_db_blocker, shared_media, tmp_path_factory) -> str:
    """The deployed web tier for the session (``manage.py serve``: gunicorn processes for pages, API and
    static files; daphne for the WebSockets on its own port, which the pages point the browser at).

    Embedded mode: no Redis (``REDIS_URL`` emptied), the outbox relay on.
    """
    _require_browser()
    from tests.workers import web_tier

    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with django_db_blocker.unblock(), web_tier(log_path=log, start_timeout_s=SERVER_START_S, REDIS_URL="",
                                               PLASTICITY_MEDIA_ROOT=str(shared_media),
                                               PLASTICITY_OUTBOX_RELAY="1") as (url, ws_url, _process):
        # The first request loads the URL map and templates; pay for it before any test's clock runs.
        for _ in range(4):  # each gunicorn process loads them once
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/accounts/login/", timeout=30).read()  # noqa: S310 - local test server
        _ws_urls[url] = ws_url
        yield url


#: live_url → the WebSocket server's base URL (ws://host:port) of the same web tier.
_ws_urls: dict[str, str] = {}


@pytest.fixture(scope="session")
def live_ws_url(live_url) -> str:
    return _ws_urls[live_url]


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module.

    Playwright's sync API runs an asyncio loop in this thread while it is started, so Django
    would take the tests' own (synchronous) ORM calls for calls from async code: they are
    allowed for as long as the browser lives, and the loop is gone before other modules run.
    """
    _require_browser()
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_url):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


@pytest.fixture(params=["js", "no-js"])
def any_page(request, browser, live_url):
    """A page with JavaScript on (the controls post with fetch) or off (plain form posts); ``page.js`` says which."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_url,
                                  java_script_enabled=request.param == "js")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.js = request.param == "js"
    yield page
    context.close()


def wait_api(page, predicate, what: str) -> None:
    """Poll the API until ``predicate`` holds; 30 s deadline."""
    for _ in range(120):
        if predicate():
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"{what}: not seen through the API within 30 s")


def login(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def wait_live(page) -> None:
    """The page's WebSocket is open."""
    page.wait_for_function("() => window.plasticityLive && window.plasticityLive.connected")


def wait_charts(page, n: int = 1) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}")
