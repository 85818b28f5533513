"""Seed the demo: the three built-in tasks, each with a deliberately weak neural model.

Idempotent: a second run reuses what exists. The weak models score below the training
trigger (0.75) so a new user watches the loop improve them.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from improvement.services import demo_seed


class Command(BaseCommand):
    help = "Create the built-in demo tasks and their weak starting models (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--interval", type=float, default=60.0,
                            help="improvement_interval for a new configuration (demo default 60 s)")

    def handle(self, *args, interval: float, **options) -> None:
        for line in demo_seed(interval=interval):
            self.stdout.write(line)
