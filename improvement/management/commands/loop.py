"""Control the self-improvement loop: ``manage.py loop start|stop|cycle|status|boot``."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from improvement.scheduler.loop import cycle_force, loop_boot, loop_start, loop_stop
from improvement.selectors import improvement_status


class Command(BaseCommand):
    help = "Start, stop, force a cycle, boot (auto_start) or show the status of the self-improvement loop."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["start", "stop", "cycle", "status", "boot"])

    def handle(self, *args, action: str, **options) -> None:
        result = {"start": loop_start, "stop": loop_stop, "cycle": cycle_force, "status": improvement_status,
                  "boot": loop_boot}[action]()
        self.stdout.write(json.dumps(result, indent=2, default=str))
