"""REST routes of improvement: runs, strategies, configuration, loop control and reports."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from improvement.api import views

router = SimpleRouter(trailing_slash=False)
router.register("runs", views.RunViewSet, basename="run")

urlpatterns = [
    *router.urls,
    path("strategies", views.StrategyListView.as_view(), name="strategy-list"),
    path("config", views.ConfigView.as_view(), name="config"),
    path("loop/start", views.LoopStartView.as_view(), name="loop-start"),
    path("loop/stop", views.LoopStopView.as_view(), name="loop-stop"),
    path("loop/cycle", views.LoopCycleView.as_view(), name="loop-cycle"),
    path("status", views.StatusView.as_view(), name="status"),
    path("history", views.HistoryView.as_view(), name="history"),
    path("health", views.HealthView.as_view(), name="health"),
    path("export", views.ExportView.as_view(), name="export"),
]
