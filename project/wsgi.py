"""WSGI entry point: the web tier's gunicorn processes (``manage.py serve``) and any plain WSGI server.

Three things beyond Django's own handler:

* the predict fast lane (``project.fastlane``) in front of it: ordinary predict requests from
  token clients are answered without Django's request cycle, everything else as before;
* Django connects ``reset_queries`` to every request's start; it empties the query log that
  only ``DEBUG`` fills (and that ``CaptureQueriesContext`` manages itself), at the cost of a
  walk over the database connections per request. Without ``DEBUG`` the log stays empty, so
  the web tier drops that receiver;
* the objects its imports made are frozen (``gc.freeze``): a web process holds over 300,000 of
  them (Django, DRF, torch, NumPy), and each full collection of the cyclic garbage collector
  scanned them all — about 170 ms with the GIL held on this project's 2-core machine, every
  request of the process waiting (the tail of predict's latency under load). Frozen objects are
  never scanned again; collections then see only what requests and loaded models create.
"""

import gc
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

gc.collect()  # nothing collectable is frozen with the rest
gc.freeze()
