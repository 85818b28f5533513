"""Vendor a plotly.js bundle into ``static/vendor/`` with no absolute URL left in it.

``manage.py vendor_plotly path/to/plotly-basic.min.js`` (from the npm package
``plotly.js-basic-dist-min``: scatter, bar and pie, all the panel draws). See
``project.vendor``.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from project.vendor import absolute_urls, offline_bundle

TARGET = "vendor/plotly-basic.min.js"


class Command(BaseCommand):
    help = "Copy a plotly.js bundle into static/vendor/, removing every absolute URL from it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("source", help="the plotly.js bundle to vendor")

    def handle(self, *args, source: str, **options) -> None:
        path = Path(source)
        if not path.is_file():
            raise CommandError(f"source: no file at {source}")
        text = offline_bundle(path.read_text(encoding="utf-8"))
        left = absolute_urls(text)
        if left:
            raise CommandError(f"absolute URLs remain: {', '.join(left[:5])}")
        target = Path(settings.BASE_DIR) / "static" / TARGET
        target.write_text(text, encoding="utf-8")
        self.stdout.write(f"wrote {target} ({len(text):,} characters)")
