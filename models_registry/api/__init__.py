"""REST API of the app (serializers, views, urls)."""
