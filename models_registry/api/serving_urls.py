"""REST routes of serving: predictions, serving state and switches."""

urlpatterns: list = []
