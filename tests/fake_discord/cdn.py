"""The fake CDN: serves attachment bytes and records how much of each download was sent.

``bytes_sent`` counts what the server handed to the socket. The client may have read less:
on loopback, kernel socket buffers plus aiohttp's read buffer can hold up to roughly a few
MiB, so a "never downloads past the cap" test should compare against the total size it
served (e.g. 200 MiB) or allow a few MiB of slack over the cap, not expect an exact number.
The fake shrinks its send buffer on CDN responses to keep that slack small.

Handler factories for odd behaviour (register them with ``FakeDiscord.cdn_route``)::

    fake.cdn_route("/big.mp3", cdn.stream_bytes(total=200 * 2**20))       # huge body
    fake.cdn_route("/lying.mp3", cdn.stream_bytes(total=50 * 2**20, declared_length=1000))
    fake.cdn_route("/chunked.mp3", cdn.stream_bytes(total=50 * 2**20, declared_length=None))
    fake.cdn_route("/slow.mp3", cdn.stream_bytes(total=10**6, delay_s=0.5))  # trickles
    fake.cdn_route("/loop", cdn.redirect("/loop"))                          # redirect loop
    fake.cdn_route("/gone", cdn.status(404))

Any other ``async (request) -> StreamResponse`` works too; FakeDiscord then records its
status and the body length it reports. The factories here stream chunk by chunk and record
progress live (``bytes_sent`` grows, ``aborted`` is set when the client hangs up), and
``FakeDiscord.wait_for`` wakes on each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHUNK = 64 * 1024
_SEND_BUFFER = 64 * 1024


@dataclass
class Download:
    """One CDN request as the server saw it.

    Attributes
    ----------
    path : str
        Request path.
    method : str
        ``GET`` or ``HEAD``.
    status : int
        HTTP status sent.
    bytes_sent : int
        Body bytes written to the socket (an upper bound on what the client read).
    complete : bool
        Whether the whole body was written.
    aborted : bool
        Whether the client went away before the body was complete.
    """

    path: str
    method: str
    status: int = 0
    bytes_sent: int = 0
    complete: bool = False
    aborted: bool = False


def _shrink_send_buffer(request: web.Request) -> None:
    # Keep sent-but-unread bytes small so bytes_sent tracks what the client really pulled.
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)


class BodyHandler:
    """A CDN handler that streams a body chunk by chunk and records its progress.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterator of ``bytes`` chunks for each request.
    content_type : str
        ``Content-Type`` header.
    declared_length : int or None
        ``Content-Length`` header; None sends the body chunked (no length).
    delay_s : float
        Pause before each chunk (simulates a slow server).
    """

    def __init__(
        self,
        chunks: Callable[[], Iterator[bytes]],
        *,
        content_type: str,
        declared_length: int | None,
        delay_s: float = 0.0,
    ) -> None:
        self.chunks = chunks
        self.content_type = content_type
        self.declared_length = declared_length
        self.delay_s = delay_s

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        """Serve without recording (usable as a plain aiohttp handler)."""
        return await self.serve(request, Download(request.path, request.method), lambda: None)

    async def serve(
        self, request: web.Request, record: Download, changed: Callable[[], None]
    ) -> web.StreamResponse:
        """Serve ``request``, updating ``record`` and calling ``changed`` as it goes.

        Parameters
        ----------
        request : aiohttp.web.Request
            The CDN request.
        record : Download
            Updated in place.
        changed : callable
            Called after each update (wakes ``FakeDiscord.wait_for``).

        Returns
        -------
        aiohttp.web.StreamResponse
            The finished (or abandoned) response.
        """
        response = web.StreamResponse(status=200, headers={"Content-Type": self.content_type})
        if self.declared_length is not None:
            response.content_length = self.declared_length
        else:
            response.enable_chunked_encoding()
        record.status = 200
        _shrink_send_buffer(request)
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                for chunk in self.chunks():
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    await response.write(chunk)
                    record.bytes_sent += len(chunk)
                    changed()
            await response.write_eof()
            record.complete = True
        except (ConnectionError, asyncio.CancelledError):
            # The client hung up (e.g. it stopped at its size cap): what tests look for.
            record.aborted = True
            if request.transport is not None:
                request.transport.abort()
        changed()
        return response


def serve_bytes(data: bytes, content_type: str) -> BodyHandler:
    """Handler serving fixed bytes with an honest ``Content-Length``.

    Parameters
    ----------
    data : bytes
        Body.
    content_type : str
        MIME type.

    Returns
    -------
    BodyHandler
        The handler.
    """

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]

    return BodyHandler(chunks, content_type=content_type, declared_length=len(data))


def stream_bytes(
    total: int,
    *,
    content_type: str = "audio/mpeg",
    declared_length: int | None | str = "honest",
    delay_s: float = 0.0,
    fill: bytes = b"\0",
) -> BodyHandler:
    """Handler streaming ``total`` generated bytes without holding them in memory.

    Parameters
    ----------
    total : int
        Body size actually sent.
    content_type : str
        MIME type.
    declared_length : int, None or "honest"
        ``Content-Length`` to send: ``"honest"`` = ``total``; an int lies; None = chunked.
    delay_s : float
        Pause before each 64 KiB chunk.
    fill : bytes
        Byte pattern to repeat.

    Returns
    -------
    BodyHandler
        The handler.
    """
    block = (fill * (CHUNK // len(fill) + 1))[:CHUNK]
    length = total if declared_length == "honest" else declared_length

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            part = block[: min(CHUNK, total - sent)]
            sent += len(part)
            yield part

    return BodyHandler(
        chunks,
        content_type=content_type,
        declared_length=length if isinstance(length, int) else None,
        delay_s=delay_s,
    )


def redirect(location: str, status: int = 302) -> Handler:
    """Handler answering with a redirect (point it at itself for a loop).

    Parameters
    ----------
    location : str
        ``Location`` header (path or absolute URL).
    status : int
        3xx status.

    Returns
    -------
    callable
        aiohttp handler.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return handler


def status(code: int, body: bytes = b"") -> Handler:
    """Handler answering a fixed status (e.g. 403 for an expired signed URL).

    Parameters
    ----------
    code : int
        HTTP status.
    body : bytes
        Body.

    Returns
    -------
    callable
        aiohttp handler.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, body=body)

    return handler
