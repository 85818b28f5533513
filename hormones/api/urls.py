"""REST routes of hormones."""

urlpatterns: list = []
