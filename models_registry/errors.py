"""The registry's refusal: a ``ValueError`` whose message is fit for a 400 response ("field: what was expected")."""

from __future__ import annotations


class RegistryError(ValueError):
    """A request the registry refuses, with a message fit for a 400 response."""
