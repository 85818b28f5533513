"""REST routes of improvement."""

urlpatterns: list = []
