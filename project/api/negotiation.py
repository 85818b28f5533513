"""Content negotiation for endpoints with one format.

DRF's ``DefaultContentNegotiation`` parses the ``Accept`` header and matches it against every
renderer on each request; on the predict path that was about 6 % of a request's time under
load. An endpoint that renders one format only needs none of it: ``SingleRendererNegotiation``
answers with the view's first renderer whatever ``Accept`` says (as a client asking for
``text/html`` would get JSON from a JSON-only view anyway, minus the 406). Parsers are chosen
as usual, by ``Content-Type``.
"""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation


class SingleRendererNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = renderers[0]
        return renderer, renderer.media_type
