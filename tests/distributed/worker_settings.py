"""Settings for the worker clusters of the multi-cluster tests: ``project.settings`` with each
cluster's prefetch bounded.

django-q2 lets a cluster pull up to ``queue_limit`` tasks (default: workers²) into its own queue
on top of the ones its workers execute, so one cluster of two workers can take all six of a
test's runs while the other idles. Bounding the prefetch to one task keeps deliveries spread
across clusters, as a multi-cluster deployment needs."""

from project.settings import *  # noqa: F403
from project.settings import Q_CLUSTER as _BASE_CLUSTER

Q_CLUSTER = {**_BASE_CLUSTER, "queue_limit": 1}
