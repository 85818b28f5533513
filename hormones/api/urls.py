"""REST routes of hormones."""

from django.urls import path

from hormones.api import views

urlpatterns = [
    path("hormones", views.HormoneListView.as_view(), name="hormone-list"),
    path("hormones/events", views.HormoneEventListView.as_view(), name="hormone-event-list"),
    path("brain-state", views.BrainStateView.as_view(), name="brain-state"),
]
