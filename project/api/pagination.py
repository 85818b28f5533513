"""Page through lists with ``?limit=&offset=`` (the seed's ``limit=50``), capped."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    max_limit = 1000
