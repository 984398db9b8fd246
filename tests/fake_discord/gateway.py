"""The fake gateway: one websocket session with HELLO/IDENTIFY/READY, heartbeats and RESUME.

Protocol notes (https://discord.com/developers/docs/events/gateway):

* Query ``v=10`` and ``encoding=json`` are required (4012 / 4002 otherwise); ``compress`` may
  be ``zlib-stream`` (one zlib stream per connection, every message ends with a
  ``Z_SYNC_FLUSH``, as discord.py expects) or ``zstd-stream`` (when a zstd module is installed).
* Events are filtered by the intents sent in IDENTIFY. MESSAGE_CREATE/UPDATE lose
  ``content``, ``embeds``, ``attachments``, ``components`` and ``poll`` without the
  MESSAGE_CONTENT intent, except for DMs, messages that mention the bot and the bot's own.
* Every dispatch of a session is kept with its sequence number, so a RESUME after a drop
  replays exactly the events the client missed and then sends RESUMED.
* Sharding: IDENTIFY's ``shard: [shard_id, num_shards]`` opens one session per shard (none
  sent = ``[0, 1]``); READY echoes it and lists, like the GUILD_CREATEs after it, only the
  guilds with ``(guild_id >> 22) % num_shards == shard_id``. Guild events go only to the
  session(s) owning the guild, DMs only to shard 0. An invalid shard closes with 4010, a shard
  holding more than ``FakeDiscord.max_guilds_per_shard`` guilds with 4011 (Sharding
  required). Each shard resumes its own session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import FakeDiscord

# Opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    6,
    7,
    8,
    9,
    10,
    11,
)

# Intents.
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
VALID_INTENTS = (1 << 26) - 1


class _Compressor:
    """Transport compression for one connection (None = plain text frames)."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self._zlib = zlib.compressobj() if kind == "zlib-stream" else None
        self._zstd: Any = None
        if kind == "zstd-stream":
            self._zstd = _zstd_compressor()

    def __call__(self, text: str) -> bytes | str:
        data = text.encode()
        if self._zlib is not None:
            return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if self._zstd is not None:
            return self._zstd(data)
        return text


def zstd_available() -> bool:
    """Whether a zstd implementation is importable (then discord.py asks for zstd-stream).

    Returns
    -------
    bool
        True when ``zstandard`` or ``compression.zstd`` can be imported.
    """
    try:
        _zstd_compressor()
    except ImportError:
        return False
    return True


def _zstd_compressor() -> Callable[[bytes], bytes]:
    # One streaming compressor per connection; each message is flushed as a complete block.
    try:
        import zstandard  # type: ignore[import-not-found]

        obj = zstandard.ZstdCompressor().compressobj()
        return lambda data: obj.compress(data) + obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    except ImportError:
        from compression import zstd  # type: ignore[import-not-found]

        comp = zstd.ZstdCompressor()
        return lambda data: comp.compress(data, mode=zstd.ZstdCompressor.FLUSH_BLOCK)


@dataclass(eq=False)
class Connection:
    """One websocket connection of the bot."""

    ws: web.WebSocketResponse
    request: web.Request
    compress: _Compressor
    path: str
    query: dict[str, str]
    session: Session | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    async def send(self, payload: dict[str, Any]) -> None:
        """Serialise, compress and send one gateway payload."""
        # Compress and send under one lock: the zlib stream must see frames in send order.
        async with self.lock:
            if self.closed or self.ws.closed:
                raise ConnectionResetError("gateway connection closed")
            frame = self.compress(json.dumps(payload, separators=(",", ":")))
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_str(frame)


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's formula: the shard that receives a guild's events (``(id >> 22) % count``).

    Parameters
    ----------
    guild_id : int
        The guild's snowflake.
    shard_count : int
        The ``num_shards`` the bot identified with.

    Returns
    -------
    int
        The shard id.
    """
    return (guild_id >> 22) % shard_count


@dataclass(eq=False)
class Session:
    """A gateway session: survives connection drops, holds the dispatch history.

    ``shard`` is the ``[shard_id, num_shards]`` of its IDENTIFY (``(0, 1)`` when it sent none,
    as Discord assumes); ``sharded`` says whether it sent one (READY then echoes it).
    """

    session_id: str
    intents: int
    shard: tuple[int, int] = (0, 1)
    sharded: bool = False
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    connection: Connection | None = None

    def owns(self, guild_id: int | None) -> bool:
        """Whether this session receives the events of ``guild_id`` (``None``: a DM or other
        guild-less event, which Discord sends to shard 0 only)."""
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return shard_of(guild_id, count) == shard_id

    @property
    def live(self) -> bool:
        """Whether a connection currently carries this session."""
        return self.connection is not None and not self.connection.closed


class Gateway:
    """Server side of the gateway for :class:`~fake_discord.FakeDiscord`.

    Holds the bot's sessions (``sessions``, by session id), one per IDENTIFY: an unsharded bot
    has one, shard ``(0, 1)``. Each guild event goes to every session owning the guild by
    :func:`shard_of`; DMs go to shard 0. Two live sessions of one shard both get its events, as
    on Discord (a fleet that runs a shard twice answers twice); a new IDENTIFY replaces only
    sessions of its shard that lost their connection.
    """

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: dict[str, Session] = {}
        self.connections: list[dict[str, Any]] = []
        self._live: set[Connection] = set()
        # Serialises dispatch against RESUME replay so no event is lost or duplicated.
        self._dispatch_lock = asyncio.Lock()

    # -- public helpers -------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        """The most recently identified session (the only one of an unsharded bot)."""
        return next(reversed(self.sessions.values()), None)

    def session_of(self, shard_id: int) -> Session:
        """The current session of shard ``shard_id`` (the latest one identified with it).

        Raises
        ------
        LookupError
            If no session identified with that shard id.
        """
        matches = [s for s in self.sessions.values() if s.shard[0] == shard_id]
        if not matches:
            raise LookupError(f"no session identified as shard {shard_id}")
        return matches[-1]

    @property
    def connected(self) -> bool:
        """Whether the bot has sessions and every one of them a live connection."""
        return bool(self.sessions) and all(s.live for s in self.sessions.values())

    def shard_connected(self, shard_id: int) -> bool:
        """Whether shard ``shard_id`` has an identified or resumed live connection."""
        try:
            return self.session_of(shard_id).live
        except LookupError:
            return False

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        intent: int | None = None,
        strip_content: bool = False,
        guild_id: int | None = None,
        session: Session | None = None,
    ) -> None:
        """Send a DISPATCH to the sessions it belongs to (buffered while disconnected).

        Parameters
        ----------
        event : str
            Event name, e.g. ``"MESSAGE_CREATE"``.
        data : dict
            Event data (copied).
        intent : int or None
            Intent bit the session needs to receive it; None = always sent.
        strip_content : bool
            Whether the message content fields are subject to the MESSAGE_CONTENT intent.
        guild_id : int or None
            The guild the event belongs to: it goes to the shard owning that guild. None: a
            DM or other guild-less event, for shard 0.
        session : Session or None
            Send to this session only (READY, GUILD_CREATE of its guilds, member chunks).
        """
        targets = (
            [session]
            if session is not None
            else [s for s in self.sessions.values() if s.owns(guild_id)]
        )
        # Discord does not queue events for an offline bot: no session, no event.
        for target in targets:
            await self._dispatch_to(target, event, data, intent, strip_content)
        self.fake._changed()

    async def _dispatch_to(
        self,
        session: Session,
        event: str,
        data: dict[str, Any],
        intent: int | None,
        strip_content: bool,
    ) -> None:
        if intent is not None and not session.intents & intent:
            return
        payload_data = json.loads(json.dumps(data))
        if strip_content and not session.intents & MESSAGE_CONTENT:
            payload_data.update(content="", embeds=[], attachments=[], components=[])
            payload_data.pop("poll", None)
        async with self._dispatch_lock:
            session.seq += 1
            payload = {"op": DISPATCH, "t": event, "s": session.seq, "d": payload_data}
            session.events.append(payload)
            await self._send_to_session(session, payload)

    @staticmethod
    async def _send_to_session(session: Session, payload: dict[str, Any]) -> None:
        conn = session.connection
        if conn is None or conn.closed:
            return  # kept in session.events; replayed on RESUME
        try:
            await conn.send(payload)
        except ConnectionError:
            conn.closed = True
            if session.connection is conn:
                session.connection = None

    def _target(self, shard_id: int | None) -> Session:
        # The session a drop / opcode is meant for: the given shard's, or the only one.
        if shard_id is not None:
            return self.session_of(shard_id)
        if len(self.sessions) > 1:
            raise ValueError("the bot runs several shards: say which one (shard_id=...)")
        session = self.session
        if session is None:
            raise RuntimeError("the bot is not connected to the fake gateway")
        return session

    async def drop(self, code: int | None = None, *, shard_id: int | None = None) -> None:
        """Close a live connection abnormally; its session stays resumable.

        Parameters
        ----------
        code : int or None
            Close code to send (e.g. 4000); None aborts the TCP connection without a close
            frame, like a network failure.
        shard_id : int or None
            The shard whose connection drops; None for the only session.
        """
        session = self._target(shard_id)
        conn = session.connection
        if conn is None:
            raise RuntimeError("the bot is not connected to the fake gateway")
        session.connection = None
        conn.closed = True
        if code is None:
            if conn.request.transport is not None:
                conn.request.transport.abort()
        else:
            with contextlib.suppress(ConnectionError):
                await conn.ws.close(code=code, message=b"dropped by FakeDiscord")
        self.fake._changed()

    async def send_op(self, op: int, d: Any, *, shard_id: int | None = None) -> None:
        """Send a non-dispatch opcode (e.g. RECONNECT) on a live connection."""
        session = self._target(shard_id)
        if not session.live:
            raise RuntimeError("the bot is not connected to the fake gateway")
        await session.connection.send({"op": op, "d": d, "s": None, "t": None})  # type: ignore[union-attr]

    async def close_all(self) -> None:
        """Close every live connection (server shutdown)."""
        for conn in list(self._live):
            conn.closed = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"FakeDiscord stopping")

    # -- websocket handler ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for ``/gateway`` and ``/gateway/resume``."""
        ws = web.WebSocketResponse(compress=True, max_msg_size=4 * 2**20, autoping=True)
        await ws.prepare(request)
        query = dict(request.query)
        record = {"path": request.path, "query": query, "at": time.monotonic(), "op": None}
        self.connections.append(record)
        self.fake._changed()

        close_code = self._check_query(query)
        if close_code is not None:
            await ws.close(code=close_code[0], message=close_code[1].encode())
            return ws
        compress = _Compressor(query.get("compress"))
        conn = Connection(ws, request, compress, request.path, query)
        self._live.add(conn)
        try:
            await conn.send(
                {
                    "op": HELLO,
                    "d": {"heartbeat_interval": self.fake.heartbeat_interval_ms},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    # The client must send JSON text (discord.py never compresses upstream).
                    await ws.close(code=4002, message=b"Decode error")
                    break
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Decode error")
                    break
                if not await self._handle_payload(conn, payload, record):
                    break
        except ConnectionError:
            pass
        finally:
            conn.closed = True
            self._live.discard(conn)
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
            self.fake._changed()
        return ws

    @staticmethod
    def _check_query(query: dict[str, str]) -> tuple[int, str] | None:
        if query.get("v") != "10":
            return 4012, "Invalid API version"
        if query.get("encoding", "json") != "json":
            return 4002, "Decode error"  # the fake speaks JSON only, not ETF
        compress = query.get("compress")
        if compress not in (None, "zlib-stream", "zstd-stream"):
            return 4002, "Decode error"
        if compress == "zstd-stream" and not zstd_available():
            return 4002, "zstd not available in FakeDiscord"
        return None

    async def _handle_payload(
        self, conn: Connection, payload: dict[str, Any], record: dict[str, Any]
    ) -> bool:
        if conn.closed:
            return False  # dropped by the fake: ignore what the client still sends
        op = payload.get("op")
        d = payload.get("d")
        if op == HEARTBEAT:
            self.fake.heartbeats.append(time.monotonic())
            await conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            self.fake._changed()
            return True
        if op == IDENTIFY:
            record["op"] = "IDENTIFY"
            record["shard"] = (d or {}).get("shard")
            return await self._identify(conn, d or {})
        if op == RESUME:
            record["op"] = "RESUME"
            return await self._resume(conn, d or {})
        if conn.session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
            return False
        if op == REQUEST_GUILD_MEMBERS:
            await self._members_chunk(conn, d or {})
            return True
        if op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE):
            return True
        await conn.ws.close(code=4001, message=b"Unknown opcode.")
        return False

    @staticmethod
    def _parse_shard(value: Any) -> tuple[int, int] | None:
        # [shard_id, num_shards], two integers with 0 <= shard_id < num_shards; None if not.
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and 0 <= value[0] < value[1]
        ):
            return value[0], value[1]
        return None

    async def _identify(self, conn: Connection, d: dict[str, Any]) -> bool:
        fake = self.fake
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return False
        if d.get("token") != fake.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return False
        sharded = "shard" in d
        shard = self._parse_shard(d["shard"]) if sharded else (0, 1)
        if shard is None:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return False
        # Discord requires sharding once a shard would hold more guilds than it allows.
        guilds = [gid for gid in fake.guild_ids if shard_of(gid, shard[1]) == shard[0]]
        if len(guilds) > fake.max_guilds_per_shard:
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return False
        intents = d.get("intents")
        if not isinstance(intents, int) or intents & ~VALID_INTENTS:
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return False
        fake.identify_intents = intents
        if intents & PRIVILEGED_INTENTS & ~fake.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return False
        session = Session(
            session_id=secrets.token_hex(16),
            intents=intents,
            shard=shard,
            sharded=sharded,
            connection=conn,
        )
        conn.session = session
        # A client re-identifies after losing a session: that one is gone. A live session of
        # the same shard stays (another process running it), and gets its events too.
        for stale in [k for k, s in self.sessions.items() if s.shard == shard and not s.live]:
            del self.sessions[stale]
        self.sessions[session.session_id] = session
        fake._changed()
        ready = fake._ready_payload(session.session_id, guilds)
        if sharded:
            ready["shard"] = list(shard)  # echoed only when IDENTIFY sent one, as Discord does
        await self.dispatch("READY", ready, session=session)
        for gid in guilds:
            await self.dispatch(
                "GUILD_CREATE", fake._guild_create_payload(intents, gid),
                intent=GUILDS, session=session,
            )
        return True

    async def _resume(self, conn: Connection, d: dict[str, Any]) -> bool:
        seq = d.get("seq")
        session = self.sessions.get(str(d.get("session_id")))
        valid = (
            session is not None
            and d.get("token") == self.fake.token
            and isinstance(seq, int)
            and seq <= session.seq
        )
        if not valid:
            # Not resumable: the client must start a new session with IDENTIFY.
            await conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return True
        assert session is not None and isinstance(seq, int)
        async with self._dispatch_lock:
            old = session.connection
            if old is not None and old is not conn:
                old.closed = True
                with contextlib.suppress(Exception):
                    await old.ws.close(code=4000)
            conn.session = session
            session.connection = conn
            for event in session.events:
                if event["s"] > seq:
                    await conn.send(event)
            session.seq += 1
            resumed = {"op": DISPATCH, "t": "RESUMED", "s": session.seq, "d": {}}
            session.events.append(resumed)
            await conn.send(resumed)
        self.fake.resumes += 1
        self.fake._changed()
        return True

    async def _members_chunk(self, conn: Connection, d: dict[str, Any]) -> None:
        fake = self.fake
        session = conn.session
        assert session is not None
        try:
            guild_id = int(d.get("guild_id", fake.guild_id))
        except (TypeError, ValueError):
            guild_id = fake.guild_id
        if guild_id not in fake.guild_ids or not session.owns(guild_id):
            return  # Discord answers only for guilds of this shard
        members = [fake._member_payload(uid, guild_id) for uid in fake._members]
        chunk: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if "nonce" in d:
            chunk["nonce"] = d["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, session=session)
