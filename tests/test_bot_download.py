"""Size-capped downloads and the URL policy (no SSRF), against a local aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
import yarl
from aiohttp import web

from bot.download import (
    BlockedAddressError,
    DownloadError,
    PublicOnlyResolver,
    check_url,
    fetch_attachment,
    fetch_url,
    is_public_address,
    url_session,
)
from genre_core.errors import NotAudioError, TooLargeError

CAP = 100_000


@dataclass
class Server:
    base: str
    hits: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    """Serves audio, pages, redirects and oversized bodies on 127.0.0.1."""
    state = Server("")

    async def stream(request: web.Request, total: int, length: int | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        sent = 0
        try:
            while sent < total:
                await response.write(b"\0" * 16384)
                sent += 16384
                state.sent[request.path] = sent
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    async def handle(request: web.Request) -> web.StreamResponse:
        state.hits.append(request.path)
        path = request.path
        if path == "/song.mp3":
            return web.Response(body=b"ID3" + bytes(1000), content_type="audio/mpeg")
        if path == "/page":
            return web.Response(text="<html>hi</html>", content_type="text/html")
        if path == "/big-honest.mp3":
            return await stream(request, 10 * CAP, 10 * CAP)
        if path == "/big-chunked.mp3":
            return await stream(request, 20_000_000, None)
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            raise web.HTTPFound(f"/hop/{left - 1}" if left > 1 else "/song.mp3")
        if path == "/slow.mp3":
            await asyncio.sleep(1.5)
            return web.Response(body=b"late")
        if path == "/attachment-dispo":
            return web.Response(
                body=b"abc",
                content_type="audio/ogg",
                headers={"Content-Disposition": 'attachment; filename="x.ogg"'},
            )
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fc00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.mp3",
        "http://localhost:8080/x.mp3",
        "http://[::1]/x.mp3",
        "http://169.254.169.254/latest/meta-data",
        "http://0x7f000001/x.mp3",
    ],
)
async def test_private_and_loopback_hosts_are_refused(url: str) -> None:
    with pytest.raises(BlockedAddressError, match="private or local address"):
        await check_url(yarl.URL(url), allow_private=False)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x.mp3", "file:///etc/passwd", "javascript:alert(1)", "/relative.mp3"]
)
async def test_only_http_links_are_accepted(url: str) -> None:
    with pytest.raises(DownloadError, match="Only http"):
        await check_url(yarl.URL(url), allow_private=True)


async def test_the_resolver_refuses_names_that_resolve_to_private_addresses() -> None:
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(BlockedAddressError):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_a_local_server_is_never_contacted_without_permission(server: Server) -> None:
    async with url_session(allow_private=False, timeout_s=5) as session:
        with pytest.raises(BlockedAddressError):
            await fetch_url(session, server.base + "/song.mp3", max_bytes=CAP, max_redirects=3)
    assert server.hits == []


async def test_fetches_a_file_and_names_it(server: Server) -> None:
    async with url_session(allow_private=True, timeout_s=5) as session:
        got = await fetch_url(
            session, server.base + "/song.mp3", max_bytes=CAP, max_redirects=3, allow_private=True
        )
        assert got.data.startswith(b"ID3") and len(got.data) == 1003
        assert got.filename == "song.mp3" and got.content_type == "audio/mpeg"
        named = await fetch_url(
            session,
            server.base + "/attachment-dispo",
            max_bytes=CAP,
            max_redirects=3,
            allow_private=True,
        )
        assert named.filename == "x.ogg"


async def test_redirects_are_followed_up_to_the_limit(server: Server) -> None:
    async with url_session(allow_private=True, timeout_s=5) as session:
        got = await fetch_url(
            session, server.base + "/hop/3", max_bytes=CAP, max_redirects=3, allow_private=True
        )
        assert got.filename == "song.mp3"
        with pytest.raises(DownloadError, match="redirects more than 3 times"):
            await fetch_url(
                session, server.base + "/hop/4", max_bytes=CAP, max_redirects=3, allow_private=True
            )
        with pytest.raises(DownloadError, match="redirects more than"):
            await fetch_url(
                session, server.base + "/loop", max_bytes=CAP, max_redirects=5, allow_private=True
            )
    assert server.hits.count("/loop") == 6


async def test_web_pages_and_errors_are_explained(server: Server) -> None:
    async with url_session(allow_private=True, timeout_s=5) as session:
        with pytest.raises(NotAudioError, match="web page"):
            await fetch_url(
                session, server.base + "/page", max_bytes=CAP, max_redirects=3, allow_private=True
            )
        with pytest.raises(DownloadError, match="HTTP 404"):
            await fetch_url(
                session,
                server.base + "/nothing-here",
                max_bytes=CAP,
                max_redirects=3,
                allow_private=True,
            )
    async with url_session(allow_private=True, timeout_s=0.3) as session:
        with pytest.raises(DownloadError, match="took too long"):
            await fetch_url(
                session,
                server.base + "/slow.mp3",
                max_bytes=CAP,
                max_redirects=3,
                allow_private=True,
            )


async def test_never_reads_past_the_cap(server: Server) -> None:
    async with url_session(allow_private=True, timeout_s=10) as session:
        with pytest.raises(TooLargeError, match="up to 0.1 MB"):
            await fetch_url(
                session,
                server.base + "/big-honest.mp3",
                max_bytes=CAP,
                max_redirects=3,
                allow_private=True,
            )
        with pytest.raises(TooLargeError, match="larger than"):
            await fetch_url(
                session,
                server.base + "/big-chunked.mp3",
                max_bytes=CAP,
                max_redirects=3,
                allow_private=True,
            )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TooLargeError):
            await fetch_attachment(
                session, server.base + "/big-chunked.mp3", max_bytes=CAP, timeout_s=10
            )
        assert await fetch_attachment(
            session, server.base + "/song.mp3", max_bytes=CAP, timeout_s=10
        ) == b"ID3" + bytes(1000)
    await asyncio.sleep(0.2)  # let the server notice the hang-up
    # The chunked body was 20 MB; the client hung up after the cap (plus socket buffers).
    assert server.sent["/big-chunked.mp3"] < 20_000_000 // 2
