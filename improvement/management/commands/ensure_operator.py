"""Create (or reuse) the operator account for the embedded mode and print how to log in."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the operator (staff superuser) account if missing; credentials from the environment or generated."

    def handle(self, *args, **options) -> None:
        username = os.environ.get("PLASTICITY_ADMIN_USER", "operator")
        password = os.environ.get("PLASTICITY_ADMIN_PASSWORD")
        stored = Path(settings.VAR_DIR) / "operator_password"
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            if not password:
                password = secrets.token_urlsafe(12)
                stored.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(password)
            User.objects.create_superuser(username=username, password=password, email="")
            self.stdout.write(self.style.SUCCESS(f"Created operator account {username!r}."))
        elif password:
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        elif stored.exists():
            password = stored.read_text().strip()
        shown = password or "(unchanged; set PLASTICITY_ADMIN_PASSWORD to reset it)"
        self.stdout.write(f"Log in as: {username} / {shown}")
