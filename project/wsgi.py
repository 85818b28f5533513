"""WSGI entry point: the web tier's gunicorn processes (``manage.py serve``) and any plain WSGI server.

Two things beyond Django's own handler:

* the predict fast lane (``project.fastlane``) in front of it: ordinary predict requests from
  token clients are answered without Django's request cycle, everything else as before;
* Django connects ``reset_queries`` to every request's start; it empties the query log that
  only ``DEBUG`` fills (and that ``CaptureQueriesContext`` manages itself), at the cost of a
  walk over the database connections per request. Without ``DEBUG`` the log stays empty, so
  the web tier drops that receiver.
"""

import os

from django.conf import settings
from django.core.signals import request_started
from django.core.wsgi import get_wsgi_application
from django.db import reset_queries

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
_django = get_wsgi_application()

from project.fastlane import PredictFastLane  # noqa: E402 - needs the apps loaded by get_wsgi_application()

application = PredictFastLane(_django)

if not settings.DEBUG:
    request_started.disconnect(reset_queries)
