"""The export's HTTP response: streamed to WSGI and ASGI servers alike, a chunk at a time.

Under ASGI (daphne) Django's own ``StreamingHttpResponse`` reads a synchronous iterator whole
into a list before sending any of it; ``ExportResponse`` hands the server one chunk at a time.
The rows themselves come from ``improvement.export``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import cast

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

_END = object()


class ExportResponse(StreamingHttpResponse):
    """A streaming response that an ASGI server also gets a chunk at a time.

    ``StreamingHttpResponse.__aiter__`` consumes a synchronous iterator completely
    (``sync_to_async(list)``) before yielding anything, so under daphne the whole export sat
    in the server's memory, growing with the history. Here each chunk is pulled on its own,
    in the request's thread (``thread_sensitive``: the database cursor was opened there), as
    the server sends. Served synchronously (WSGI, the test client) nothing changes.
    """

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.is_async:
            async for part in super().__aiter__():
                yield part
            return
        parts = cast(Iterator[bytes], self.streaming_content)  # the synchronous iterator, chunks made bytes
        next_or_end: Callable[[Iterator[bytes], object], object] = next
        pull = sync_to_async(next_or_end, thread_sensitive=True)
        while (chunk := await pull(parts, _END)) is not _END:
            yield cast(bytes, chunk)
