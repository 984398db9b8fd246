"""Size-capped downloads: Discord attachments and the ``/genre url:`` option.

Never reads more than the cap (plus the one byte that proves a file is too big): the
Content-Length is checked first, then the body is counted while streaming. Links given by users
are fetched only over http(s), only from public addresses (checked after DNS resolution, again at
connect time, and on every redirect), with a bounded number of redirects and timeouts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from genre_core.errors import GenreError, NotAudioError, TooLargeError

CHUNK = 64 * 1024


class DownloadError(GenreError):
    """A file or link could not be fetched; the message says why."""

    code = "download"


class BlockedAddressError(DownloadError):
    """The link points at a private, loopback or otherwise internal address."""

    code = "blocked_address"


@dataclass(frozen=True)
class Download:
    """A fetched file."""

    data: bytes
    filename: str | None
    content_type: str | None


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def too_large(size: int | None, cap: int, name: str | None = None) -> TooLargeError:
    """The error for a file over the cap, in words."""
    what = f"`{name}`" if name else "That file"
    if size is not None:
        return TooLargeError(f"{what} is {_mb(size)}; I can analyse files up to {_mb(cap)}.")
    return TooLargeError(f"{what} is larger than the {_mb(cap)} I can analyse.")


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback, link-local...).

    Parameters
    ----------
    address : str
        An IPv4 or IPv6 address.

    Returns
    -------
    bool
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """A resolver that refuses names resolving to non-public addresses.

    The check happens on the addresses actually connected to, so a name that resolves to a
    public address for the first lookup and a private one for the second (DNS rebinding) is
    still refused.
    """

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if is_loopback_name(host):
            raise BlockedAddressError(_blocked_message(host))
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not is_public_address(result["host"]):
                raise BlockedAddressError(_blocked_message(host))
        return results

    async def close(self) -> None:
        await self._inner.close()


def is_loopback_name(host: str) -> bool:
    """``localhost`` and its subdomains are loopback whatever a resolver says (RFC 6761), and
    a machine without an /etc/hosts entry for them must not turn that into "not found"."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _blocked_message(host: str) -> str:
    return (
        f"I can't fetch from `{host}`: it is a private or local address. "
        "Use a public link to the audio file."
    )


def url_session(*, allow_private: bool, timeout_s: float) -> aiohttp.ClientSession:
    """A session for user-given links: public addresses only unless ``allow_private``.

    Parameters
    ----------
    allow_private : bool
        Allow private and loopback addresses (tests that serve files from 127.0.0.1).
    timeout_s : float
        Total time allowed for one request.

    Returns
    -------
    aiohttp.ClientSession
    """
    connector = aiohttp.TCPConnector(resolver=None if allow_private else PublicOnlyResolver())
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10.0)),
        trust_env=False,  # no proxies from the environment: they would bypass the address check
    )


async def check_url(url: yarl.URL, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s) or whose host resolves to a non-public address.

    Raises
    ------
    DownloadError
        Not an http(s) link.
    BlockedAddressError
        The host is private, loopback, link-local, or does not resolve.
    """
    if url.scheme not in ("http", "https") or not url.host:
        raise DownloadError("Only http:// and https:// links to audio files are supported.")
    if allow_private:
        return
    host = url.host
    if is_loopback_name(host):
        raise BlockedAddressError(_blocked_message(host))
    try:
        addresses = [ipaddress.ip_address(host).compressed]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, url.port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            raise DownloadError(f"I couldn't find the server `{host}`.") from None
        addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise BlockedAddressError(_blocked_message(host))


def _filename(url: yarl.URL, headers: Any) -> str | None:
    disposition = headers.get("Content-Disposition", "")
    if "filename=" in disposition:
        name = disposition.split("filename=", 1)[1].split(";", 1)[0].strip().strip('"')
        if name:
            return PurePosixPath(name).name
    name = PurePosixPath(unquote(url.path)).name
    return name or None


async def read_capped(
    response: aiohttp.ClientResponse, max_bytes: int, name: str | None = None
) -> bytes:
    """Read a response body, refusing it once it passes ``max_bytes``.

    Parameters
    ----------
    response : aiohttp.ClientResponse
        An open response.
    max_bytes : int
        The cap.
    name : str, optional
        The file's name, for the message.

    Returns
    -------
    bytes

    Raises
    ------
    TooLargeError
        Content-Length says, or the stream proves, that the body is over the cap.
    """
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large(response.content_length, max_bytes, name)
    parts: list[bytes] = []
    total = 0
    while True:
        # Never ask for more than one byte past the cap: that byte proves the file is too big.
        chunk = await response.content.read(min(CHUNK, max_bytes + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise too_large(None, max_bytes, name)
    return b"".join(parts)


async def fetch_attachment(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    name: str | None = None,
) -> bytes:
    """Download a Discord attachment (a trusted CDN URL) with a size cap.

    Parameters
    ----------
    session : aiohttp.ClientSession
        The bot's session.
    url : str
        The attachment's URL.
    max_bytes : int
        The cap.
    timeout_s : float
        Total time allowed.
    name : str, optional
        The attachment's file name, for messages.

    Returns
    -------
    bytes
    """
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                raise DownloadError(
                    f"Discord would not give me the file (HTTP {response.status})."
                    " Please try again."
                )
            return await read_capped(response, max_bytes, name)
    except TimeoutError:
        raise DownloadError("Downloading the file took too long. Please try again.") from None
    except aiohttp.ClientError as exc:
        raise DownloadError(f"I couldn't download the file ({type(exc).__name__}).") from None


async def fetch_url(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    max_redirects: int,
    allow_private: bool = False,
) -> Download:
    """Download a user-given link with a size cap, following a bounded number of redirects.

    Every hop is checked: http(s) only and, unless ``allow_private``, public addresses only.
    Web pages (``text/*``) are refused before their body is read.

    Parameters
    ----------
    session : aiohttp.ClientSession
        A session from :func:`url_session` (its resolver re-checks addresses at connect time).
    url : str
        The link.
    max_bytes : int
        The cap.
    max_redirects : int
        Redirects followed at most.
    allow_private : bool
        Allow private and loopback addresses (tests only).

    Returns
    -------
    Download

    Raises
    ------
    DownloadError
        Bad scheme, private address, HTTP error, redirect loop, timeout or connection failure.
    NotAudioError
        The link is a web page or text.
    TooLargeError
        The file is over the cap.
    """
    try:
        current = yarl.URL(url.strip())
    except ValueError:
        raise DownloadError("That doesn't look like a link.") from None
    try:
        for _ in range(max_redirects + 1):
            await check_url(current, allow_private=allow_private)
            async with session.get(current, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location")
                    if not location:
                        raise DownloadError("The link redirects nowhere.")
                    current = current.join(yarl.URL(location))
                    continue
                if response.status != 200:
                    raise DownloadError(f"The link answered HTTP {response.status}, not a file.")
                content_type = response.content_type or None
                if content_type and content_type.startswith("text/"):
                    raise NotAudioError(
                        "That link leads to a web page, not an audio file. "
                        "Use a direct link to the file (ending in .mp3, .ogg...)."
                    )
                name = _filename(current, response.headers)
                data = await read_capped(response, max_bytes, name)
                return Download(data, name, content_type)
    except GenreError:
        raise  # includes BlockedAddressError from the resolver, which aiohttp lets through
    except TimeoutError:
        raise DownloadError("The server took too long to send the file.") from None
    except aiohttp.ClientConnectorError:
        raise DownloadError(f"I couldn't connect to `{current.host}`.") from None
    except aiohttp.ClientError as exc:
        raise DownloadError(
            f"The download from `{current.host}` failed ({type(exc).__name__})."
        ) from None
    raise DownloadError(f"The link redirects more than {max_redirects} times.")
