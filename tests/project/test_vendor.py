"""Vendored browser assets reach nothing outside this server."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from project.vendor import NAMESPACES, absolute_urls, offline_bundle

STATIC = Path(__file__).resolve().parents[2] / "static"


def test_no_static_asset_holds_an_absolute_url():
    for path in sorted(STATIC.rglob("*")):
        if path.suffix in {".js", ".css", ".html"}:
            assert absolute_urls(path.read_text(encoding="utf-8")) == [], path


def test_offline_bundle_keeps_namespaces_and_drops_every_scheme():
    text = ('a.href="https://plotly.com/";u="//x";ns="http://www.w3.org/2000/svg";'
            'see http://example.org/docs and https://cdn.plot.ly/un/')
    out = offline_bundle(text)
    assert absolute_urls(text) == ["http://example.org/docs", "https://cdn.plot.ly/un/", "https://plotly.com/"]
    assert absolute_urls(out) == []
    assert '"http://www.w3.org/2000/svg"' in out and 'a.href="plotly.com/"' in out
    assert all(ns in offline_bundle(ns) for ns in NAMESPACES)


def test_the_panel_uses_the_vendored_bundle():
    templates = Path(__file__).resolve().parents[2] / "templates" / "panel"
    assert (STATIC / "vendor" / "plotly-basic.min.js").stat().st_size > 500_000
    assert "vendor/plotly-basic.min.js" in (templates / "overview.html").read_text(encoding="utf-8")


def test_vendor_plotly_refuses_a_missing_source(tmp_path):
    with pytest.raises(CommandError, match="source: no file"):
        call_command("vendor_plotly", str(tmp_path / "nope.js"))
