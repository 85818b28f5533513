"""Page through lists with ``?limit=&offset=`` (the seed's ``limit=50``), capped."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    max_limit = 1000
    #: Offsets beyond this are clamped: no list is that long, and SQL engines refuse larger numbers.
    max_offset = 10**12

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)
