"""Shared pieces of the REST API: errors, permissions, throttles, uploads, pagination, schema."""
