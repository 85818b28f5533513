"""REST routes of serving: predictions, feedback, serving state and switches (no trailing slashes)."""

from django.urls import path

from models_registry.api.serving_views import (
    PingView,
    ServingSwitchListView,
    TaskFeedbackView,
    TaskPredictView,
    TaskServingView,
)

urlpatterns = [
    path("tasks/<str:slug>/predict", TaskPredictView.as_view(), name="task-predict"),
    path("tasks/<str:slug>/feedback", TaskFeedbackView.as_view(), name="task-feedback"),
    path("tasks/<str:slug>/serving", TaskServingView.as_view(), name="task-serving"),
    path("serving/switches", ServingSwitchListView.as_view(), name="serving-switches"),
    path("ping", PingView.as_view(), name="api-ping"),
]
