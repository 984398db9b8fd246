"""FakeDiscord: a local aiohttp server speaking Discord's REST API, gateway and CDN."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from . import cdn, payloads, spec
from .gateway import (
    DIRECT_MESSAGE_REACTIONS,
    DIRECT_MESSAGES,
    GUILD_MEMBERS,
    GUILD_MESSAGE_REACTIONS,
    GUILD_MESSAGES,
    GUILDS,
    PRIVILEGED_INTENTS,
    RECONNECT,
    Gateway,
)

API_PREFIX = "/api/v10"
#: Discord closes an IDENTIFY with 4011 (Sharding required) past this many guilds per shard.
MAX_GUILDS_PER_SHARD = 2500
#: GET /gateway/bot recommends about one shard per this many guilds.
GUILDS_PER_RECOMMENDED_SHARD = 1000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's per-message upload limit without boosts
NONCE_WINDOW_S = 300.0  # Discord keeps enforced nonces "for a few minutes"

_MESSAGE_FLAGS_ALLOWED = (
    payloads.FLAG_SUPPRESS_EMBEDS
    | payloads.FLAG_EPHEMERAL
    | payloads.FLAG_SUPPRESS_NOTIFICATIONS
    | (1 << 15)  # IS_COMPONENTS_V2
)


class ApiError(Exception):
    """An error answer in Discord's JSON shape (raised inside route handlers)."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON body Discord would send."""
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            data["errors"] = self.errors
        return data


def _json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Exactly "application/json" (no charset): discord.py compares the header verbatim.
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _form_error(path: list[str], code: str, message: str) -> ApiError:
    """A 400 / 50035 "Invalid Form Body" with one error at ``path``."""
    errors: dict[str, Any] = {}
    node = errors
    for part in path:
        node = node.setdefault(part, {})
    node["_errors"] = [{"code": code, "message": message}]
    return ApiError(400, 50035, "Invalid Form Body", errors)


def _template_regex(template: str) -> re.Pattern[str]:
    """Regex for an OpenAPI path template: ``*_id`` are snowflakes, others one segment."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ..., literal
    pattern = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            pattern += re.escape(part)
        else:
            pattern += rf"(?P<{part}>\d+)" if part.endswith("_id") else rf"(?P<{part}>[^/]+)"
    return re.compile(pattern)


def _unknown(what: str, code: int) -> ApiError:
    return ApiError(404, code, f"Unknown {what}")


def _walk(components: Any) -> Iterator[dict[str, Any]]:
    """Every component in a component tree, depth first (rows, labels, sections...)."""
    for comp in components or []:
        if not isinstance(comp, dict):
            continue
        yield comp
        yield from _walk(comp.get("components"))
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), dict):
                yield from _walk([comp[key]])


def _assign_component_ids(components: list[dict[str, Any]]) -> None:
    """Fill in ``id`` as Discord does: sequentially, skipping ids the sender chose (0 = none)."""
    used = {c["id"] for c in _walk(components) if c.get("id")}
    next_id = 0
    for comp in _walk(components):
        if not comp.get("id"):
            next_id += 1
            while next_id in used:
                next_id += 1
            comp["id"] = next_id


def _duplicate_custom_id_errors(components: Any) -> dict[str, Any]:
    """Discord refuses components sharing a ``custom_id`` (50035)."""
    seen: set[str] = set()
    for comp in _walk(components):
        cid = comp.get("custom_id")
        if isinstance(cid, str):
            if cid in seen:
                error = {
                    "code": "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "message": "Component custom id cannot be duplicated",
                }
                return {"components": {"_errors": [error]}}
            seen.add(cid)
    return {}


@dataclass
class RequestRecord:
    """One REST request the fake received.

    Attributes
    ----------
    method : str
        HTTP method.
    path : str
        Decoded path after ``/api/v10`` (e.g. ``/channels/1/messages``).
    query : dict
        Query parameters.
    json : Any
        JSON body, or the decoded ``payload_json`` of a multipart body; None if none.
    status : int
        Status the fake answered.
    code : int or None
        Discord error code of an error answer (50035, 40060, 10062, ...).
    route : str or None
        OpenAPI template matched; None for an unknown route.
    files : list of dict
        Uploaded files: ``{"field", "filename", "size", "content_type"}``.
    errors : dict or None
        The ``errors`` of a 50035 answer.
    at : float
        ``time.monotonic()`` when it arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    status: int = 0
    code: int | None = None
    route: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, Any] | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    status: int
    retry_after: float = 0.0
    global_: bool = False
    after_handling: bool = False


@dataclass
class _File:
    field: str
    filename: str
    data: bytes
    content_type: str | None


@dataclass
class _Ctx:
    request: web.Request
    params: dict[str, str]
    body: Any
    files: list[_File]
    query: dict[str, str]
    # Set by interaction handlers: the message their action produced (for the response log).
    message: _Message | None = None


@dataclass
class _Route:
    method: str
    regex: re.Pattern[str]
    template: str
    handler: Callable[[_Ctx], Awaitable[tuple[int, Any]]]
    auth: bool = True
    message_body: bool = False
    # Interaction-token routes: the `kind` logged in FakeDiscord.interaction_responses.
    kind: str | None = None


@dataclass
class _Message:
    data: dict[str, Any]
    channel_id: int
    ephemeral: bool = False
    deleted: bool = False
    interaction_id: int | None = None


@dataclass
class _Interaction:
    payload: dict[str, Any]
    created: float
    component_message_id: int | None = None
    acked: bool = False
    callback_type: int | None = None
    original_id: int | None = None
    # After a deferred (type 5) response, Discord turns the first followup into an edit of
    # the "thinking" message; its ephemerality comes from the defer, not the followup.
    followup_edits_original: bool = False
    message_ids: list[int] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    # A MODAL (type 9) answer: the modal as Discord shows it (ids filled in), until submitted.
    modal: dict[str, Any] | None = None
    modal_submitted: bool = False
    # MODAL_SUBMIT interactions: the interaction whose modal was submitted.
    opened_from: int | None = None


class ReactionBook:
    """Reactions the bot added, by message, plus a log of every add/remove.

    Attributes
    ----------
    current : dict
        ``message_id -> [emoji, ...]`` currently added by the bot (in order added).
    log : list of tuple
        ``(action, channel_id, message_id, emoji)`` with action ``"add"`` or ``"remove"``.
    """

    def __init__(self) -> None:
        self.current: dict[int, list[str]] = {}
        self.log: list[tuple[str, int, int, str]] = []

    def on(self, message_id: int | str) -> list[str]:
        """Emojis the bot currently has on a message.

        Parameters
        ----------
        message_id : int or str
            Message snowflake.

        Returns
        -------
        list of str
            Emoji strings (unicode, or ``name:id`` for custom emojis).
        """
        return list(self.current.get(int(message_id), []))


class CommandBook:
    """Application commands as synced by the bot (bulk overwrite replaces a scope).

    Attributes
    ----------
    global_commands : list of dict
        Global commands as Discord stores them (with ``id``, ``application_id``...).
    guild_commands : dict
        ``guild_id -> [command, ...]``.
    syncs : list of tuple
        ``(guild_id or None, [names])`` for every bulk overwrite, in order.
    """

    def __init__(self) -> None:
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.syncs: list[tuple[int | None, list[str]]] = []

    def scope(self, guild_id: int | None) -> list[dict[str, Any]]:
        """Commands of one scope (None = global)."""
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.get(guild_id, [])

    def find(
        self, name: str, *, type: int = 1, guild_id: int | None = None
    ) -> dict[str, Any] | None:
        """Look a command up as a Discord client would: guild scope first, then global.

        Parameters
        ----------
        name : str
            Command name.
        type : int
            1 chat input, 2 user, 3 message.
        guild_id : int or None
            Guild to search first.

        Returns
        -------
        dict or None
            The stored command, or None.
        """
        scopes = ([guild_id] if guild_id is not None else []) + [None]
        for scope in scopes:
            for cmd in self.scope(scope):
                if cmd["name"] == name and cmd.get("type", 1) == type:
                    return cmd
        return None

    def names(self, guild_id: int | None = None) -> list[str]:
        """Names of the commands in one scope (None = global)."""
        return [c["name"] for c in self.scope(guild_id)]


class FakeDiscord:
    """A protocol-faithful, local stand-in for Discord (REST + gateway + CDN).

    Parameters
    ----------
    heartbeat_interval_ms : int
        Interval announced in HELLO.
    interaction_timeout_s : float
        Time allowed for the first interaction callback (Discord: 3 s).
    upload_limit : int
        Largest total upload per message, in bytes (413 / 40005 above it).
    privileged_intents : int
        Privileged intents "enabled in the developer portal"; IDENTIFY asking for others is
        closed with 4014, as Discord does.
    require_synced : bool
        Refuse to invoke commands the bot never synced (Discord only knows synced ones).
    validate : bool
        Check request bodies against the OpenAPI spec (needs ``../shared/data``).
    max_guilds_per_shard : int
        An IDENTIFY whose shard would hold more guilds is closed with 4011, as Discord does.
    recommended_shards : int or None
        ``shards`` in ``GET /gateway/bot``; None: one per 1,000 guilds (at least 1).

    Guilds: the fake starts with one (:attr:`guild_id`, its channel :attr:`channel_id`);
    :meth:`add_guild` adds more, on a chosen shard if asked. Every user is a member of every
    guild (admins are admins in each); a channel's guild decides where its events go.
    """

    def __init__(
        self,
        heartbeat_interval_ms: int = 41250,
        *,
        interaction_timeout_s: float = 3.0,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        privileged_intents: int = PRIVILEGED_INTENTS,
        require_synced: bool = True,
        validate: bool = True,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
        recommended_shards: int | None = None,
    ) -> None:
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_timeout_s = interaction_timeout_s
        self.upload_limit = upload_limit
        self.privileged_intents = privileged_intents
        self.require_synced = require_synced
        self.validate = validate
        self.max_guilds_per_shard = max_guilds_per_shard
        self.recommended_shards = recommended_shards

        self._snowflake = payloads.SnowflakeFactory()
        self.token = f"fake.{secrets.token_urlsafe(24)}"
        self.bot_user_id = self._snowflake()
        self.application_id = self.bot_user_id  # as for every modern Discord application
        self.guild_id = self._snowflake()
        self.channel_id = self._snowflake()
        self.owner_id = self._snowflake()
        self.host = "127.0.0.1"
        self.port = 0

        self._users: dict[int, dict[str, Any]] = {}
        self._members: dict[int, dict[str, Any]] = {}
        self._roles: dict[int, dict[str, Any]] = {}
        # guild id -> {"name", "channel_id", "admin_role_id", "bot_role_id", "role_ids"}
        self._guilds: dict[int, dict[str, Any]] = {}
        self._channels: dict[int, dict[str, Any]] = {}
        self._dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self._messages: dict[int, _Message] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._tokens: dict[str, int] = {}
        self._cdn: dict[str, cdn.Handler] = {}
        self._faults: list[_Fault] = []
        self._nonces: dict[tuple[int, str], tuple[_Message, float]] = {}
        self._change = asyncio.Event()

        self.requests: list[RequestRecord] = []
        self.heartbeats: list[float] = []
        self.reactions = ReactionBook()
        self.commands = CommandBook()
        self.downloads: list[cdn.Download] = []
        self.identify_intents: int | None = None
        self.resumes = 0
        self.gateway = Gateway(self)
        self._runner: web.AppRunner | None = None
        self._routes = self._route_table()
        self._setup_world()

    # ==================================================================================
    # lifecycle
    # ==================================================================================

    async def start(self) -> None:
        """Bind ``127.0.0.1`` on a free port and start serving.

        Raises
        ------
        spec.SpecUnavailable
            If ``validate`` is on and the OpenAPI spec is missing.
        """
        if self.validate:
            spec.load_spec()
        self._change = asyncio.Event()  # bind to the running loop
        app = web.Application(client_max_size=max(64 * 2**20, 2 * self.upload_limit))
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/resume", self.gateway.handle)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._api)
        app.router.add_route("*", "/{tail:.*}", self._cdn_dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, shutdown_timeout=0.5)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every connection and stop the server."""
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """Value for ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (a ``yarl.URL``)."""
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """The ``resume_gateway_url`` sent in READY (a distinct path, to check it is used)."""
        return f"ws://{self.host}:{self.port}/gateway/resume"

    @property
    def connected(self) -> bool:
        """Whether the bot has a live, identified gateway connection (every shard of it)."""
        return self.gateway.connected

    @property
    def guild_ids(self) -> list[int]:
        """Every guild the bot is in, oldest first (:attr:`guild_id` first)."""
        return list(self._guilds)

    # ==================================================================================
    # world setup and test-facing API
    # ==================================================================================

    def _setup_world(self) -> None:
        guild = self._create_guild(self.guild_id, "Fake Guild", self.channel_id)
        self.admin_role_id: int = guild["admin_role_id"]
        self.bot_role_id: int = guild["bot_role_id"]
        self._users[self.bot_user_id] = payloads.user(self.bot_user_id, "genre-bot", bot=True)
        self._members[self.bot_user_id] = {"roles": [self.bot_role_id], "at": payloads.iso_now()}
        self._users[self.owner_id] = payloads.user(self.owner_id, "owner")
        self._members[self.owner_id] = {"roles": [], "at": payloads.iso_now()}

    def _create_guild(self, guild_id: int, name: str, channel_id: int) -> dict[str, Any]:
        # @everyone (its id is the guild's), Admin, the bot's managed role, a #general channel.
        g = guild_id
        self._roles[g] = payloads.role(g, "@everyone", payloads.EVERYONE_PERMISSIONS, 0)
        admin_role_id = self._snowflake()
        self._roles[admin_role_id] = payloads.role(
            admin_role_id, "Admin", payloads.ADMINISTRATOR, 2
        )
        bot_role_id = self._snowflake()
        bot_role = payloads.role(
            bot_role_id, "genre-bot", payloads.BOT_PERMISSIONS, 1, managed=True
        )
        bot_role["tags"] = {"bot_id": str(self.bot_user_id)}
        self._roles[bot_role_id] = bot_role
        self._channels[channel_id] = payloads.text_channel(channel_id, g, "general", 0)
        guild = {
            "name": name,
            "channel_id": channel_id,
            "admin_role_id": admin_role_id,
            "bot_role_id": bot_role_id,
            "role_ids": [g, admin_role_id, bot_role_id],
        }
        self._guilds[g] = guild
        return guild

    def add_guild(
        self, name: str = "Another Guild", *, shard: tuple[int, int] | None = None
    ) -> int:
        """Add a guild the bot is in, with a ``#general`` channel (:meth:`channel_of`).

        Every user is a member (admins get its Admin role). A connected bot receives its
        GUILD_CREATE on the shard owning it, as when a bot joins a server.

        Parameters
        ----------
        name : str
            Guild name.
        shard : (int, int) or None
            ``(shard_id, num_shards)``: pick an id that Discord's formula
            ``(guild_id >> 22) % num_shards`` puts on that shard. None: the next snowflake.

        Returns
        -------
        int
            The guild id.
        """
        gid = self._snowflake.on_shard(*shard) if shard is not None else self._snowflake()
        guild = self._create_guild(gid, name, self._snowflake())
        for uid, member in self._members.items():
            if uid == self.bot_user_id:
                member["roles"].append(guild["bot_role_id"])
            elif self.admin_role_id in member["roles"]:
                member["roles"].append(guild["admin_role_id"])
        for session in self.gateway.sessions.values():
            if session.owns(gid):
                data = self._guild_create_payload(session.intents, gid)
                # A join, not an outage ending: no "unavailable" (clients tell them apart by it).
                del data["unavailable"]
                self._spawn(
                    self.gateway.dispatch("GUILD_CREATE", data, intent=GUILDS, session=session)
                )
        return gid

    def channel_of(self, guild_id: int) -> int:
        """The ``#general`` channel of a guild (:attr:`channel_id` for :attr:`guild_id`)."""
        return int(self._guilds[guild_id]["channel_id"])

    def add_user(self, name: str, *, admin: bool = False) -> int:
        """Add a member (of every guild).

        Parameters
        ----------
        name : str
            Username.
        admin : bool
            Give the member the Admin role (ADMINISTRATOR permission).

        Returns
        -------
        int
            The user id.
        """
        uid = self._snowflake()
        self._users[uid] = payloads.user(uid, name)
        self._members[uid] = {
            "roles": [g["admin_role_id"] for g in self._guilds.values()] if admin else [],
            "at": payloads.iso_now(),
        }
        for gid in self._guilds:
            data = {**self._member_payload(uid, gid), "guild_id": str(gid)}
            self._spawn(
                self.gateway.dispatch(
                    "GUILD_MEMBER_ADD", data, intent=GUILD_MEMBERS, guild_id=gid
                )
            )
        return uid

    def add_channel(self, name: str, *, guild_id: int | None = None) -> int:
        """Add a text channel to a guild (only visible to a bot that connects afterwards).

        Parameters
        ----------
        name : str
            Channel name.
        guild_id : int or None
            The guild (default: :attr:`guild_id`).

        Returns
        -------
        int
            The channel id.
        """
        gid = guild_id or self.guild_id
        cid = self._snowflake()
        position = sum(1 for c in self._channels.values() if c.get("guild_id") == str(gid))
        self._channels[cid] = payloads.text_channel(cid, gid, name, position)
        return cid

    def permissions_of(self, user_id: int, guild_id: int | None = None) -> int:
        """Guild-level permissions of a member (owner and ADMINISTRATOR imply all) in a guild
        (default: :attr:`guild_id`)."""
        if user_id == self.owner_id:
            return payloads.ALL_PERMISSIONS
        gid = guild_id or self.guild_id
        perms = int(self._roles[gid]["permissions"])
        for rid in self._roles_in(user_id, gid):
            perms |= int(self._roles[rid]["permissions"])
        return payloads.ALL_PERMISSIONS if perms & payloads.ADMINISTRATOR else perms

    @staticmethod
    def mention(user_id: int) -> str:
        """``<@id>``: put it in ``content`` to mention (and ping) a user or the bot."""
        return f"<@{user_id}>"

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Upload a file to the fake CDN and return its attachment object.

        Parameters
        ----------
        data : bytes
            File contents served by the CDN.
        filename : str
            Attachment file name.
        content_type : str or None
            MIME type in the attachment object and the CDN's ``Content-Type``. None leaves it
            out of the object (as Discord does for unknown types) and serves
            ``application/octet-stream``.
        size : int or None
            ``size`` reported in the attachment object (default: ``len(data)``); set it to
            make the metadata disagree with the bytes.

        Returns
        -------
        dict
            Discord attachment object whose ``url`` points at the fake CDN.
        """
        aid = self._snowflake()
        path = f"/attachments/{self.channel_id}/{aid}/{filename}"
        served_type = content_type or "application/octet-stream"
        self._cdn[path] = cdn.serve_bytes(data, served_type)
        return payloads.attachment(
            aid, filename, len(data) if size is None else size, self.base_url + path, content_type
        )

    def cdn_route(self, path: str, handler: cdn.Handler) -> str:
        """Serve a path of the fake CDN with a custom aiohttp handler.

        Parameters
        ----------
        path : str
            Path (``/x/y.mp3``) or a full URL on the fake (e.g. an attachment's ``url``).
        handler : callable
            ``async (aiohttp.web.Request) -> StreamResponse``; see :mod:`.cdn` for factories.

        Returns
        -------
        str
            The full URL now served by the handler.
        """
        path = urlsplit(path).path or "/"
        self._cdn[path] = handler
        return self.base_url + path

    def rate_limit(
        self,
        method: str,
        path_regex: str,
        retry_after: float = 0.3,
        count: int = 1,
        global_: bool = False,
    ) -> None:
        """Answer the next ``count`` matching REST requests with a Discord-style 429.

        Parameters
        ----------
        method : str
            HTTP method (``"*"`` for any).
        path_regex : str
            ``re.fullmatch``-ed against the decoded path after ``/api/v10``.
        retry_after : float
            Seconds in ``Retry-After`` / ``retry_after``.
        count : int
            How many requests to refuse.
        global_ : bool
            Mark it as the global rate limit.
        """
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), count, 429, retry_after, global_)
        )

    def fail(
        self, method: str, path_regex: str, status: int = 500, count: int = 1,
        *, after_handling: bool = False,
    ) -> None:
        """Answer the next ``count`` matching REST requests with an error status.

        Parameters
        ----------
        method : str
            HTTP method (``"*"`` for any).
        path_regex : str
            ``re.fullmatch``-ed against the decoded path after ``/api/v10``.
        status : int
            HTTP status (5xx: discord.py retries 500/502/504 after 1, 3, 5... s).
        count : int
            How many requests to fail.
        after_handling : bool
            Carry the request out first and lose only the answer, as when Discord stored a
            message but its reply never arrived.
        """
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), count, status,
                   after_handling=after_handling)
        )

    async def send_message(
        self,
        author_id: int,
        content: str = "",
        attachments: list[dict[str, Any]] | None = None,
        *,
        channel_id: int | None = None,
        guild_id: int | None = None,
        dm: bool = False,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A user posts a message; dispatches MESSAGE_CREATE to the bot.

        Parameters
        ----------
        author_id : int
            A user from :meth:`add_user`.
        content : str
            Text; ``<@bot_user_id>`` in it mentions the bot.
        attachments : list of dict
            Attachment objects from :meth:`add_attachment`.
        channel_id : int or None
            Guild channel (default: :attr:`channel_id`).
        guild_id : int or None
            Post in this guild's ``#general`` (:meth:`channel_of`) instead.
        dm : bool
            Send it in the author's DM with the bot instead.
        reply_to : dict or None
            A message to reply to.

        Returns
        -------
        dict
            The full message (as stored; the bot may receive it stripped).
        """
        cid = self._dm_channel_for(author_id) if dm else self._pick_channel(channel_id, guild_id)
        msg = self._new_message(
            cid,
            author_id,
            {"content": content, "attachments": list(attachments or [])},
            reference=reply_to,
        )
        await self._dispatch_message("MESSAGE_CREATE", msg)
        return json.loads(json.dumps(msg.data))

    async def react(self, user_id: int, message: dict[str, Any], emoji: str) -> None:
        """A user adds a reaction (dispatches MESSAGE_REACTION_ADD).

        Parameters
        ----------
        user_id : int
            The reacting user.
        message : dict
            The message.
        emoji : str
            Unicode emoji.
        """
        stored = self._get_message(int(message["channel_id"]), int(message["id"]))
        await self._dispatch_reaction("MESSAGE_REACTION_ADD", stored, user_id, emoji)

    async def delete_message(self, message: dict[str, Any]) -> None:
        """Its author deletes a message (dispatches MESSAGE_DELETE).

        Parameters
        ----------
        message : dict
            The message (from :meth:`send_message`).
        """
        await self._delete(self._get_message(int(message["channel_id"]), int(message["id"])))

    async def invoke_slash(
        self,
        user_id: int,
        name: str,
        options: dict[str, Any] | None = None,
        attachments: dict[str, dict[str, Any]] | None = None,
        *,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> dict[str, Any]:
        """A user runs a slash command; dispatches INTERACTION_CREATE (type 2, CHAT_INPUT).

        Parameters
        ----------
        user_id : int
            The invoking member.
        name : str
            Command name; ``"genre model rollback"`` runs a subcommand (group).
        options : dict
            ``option name -> value``. Types come from the synced definition (else inferred:
            bool, int, float, str; an attachment dict is an ATTACHMENT option).
        attachments : dict
            ``option name -> attachment dict`` (from :meth:`add_attachment`).
        channel_id : int or None
            Channel it is run in (default: :attr:`channel_id`).
        guild_id : int or None
            Run it in this guild's ``#general`` (:meth:`channel_of`) instead.

        Returns
        -------
        dict
            The interaction payload sent (``id``, ``token``, ...).

        Raises
        ------
        LookupError
            If the command was never synced (and ``require_synced``) or an option is unknown.
        PermissionError
            If the synced command's ``default_member_permissions`` hide it from this user,
            as the Discord client would.
        ValueError
            If a required option is missing.
        """
        parts = name.split()
        cid = self._pick_channel(channel_id, guild_id)
        gid = self._guild_of(cid) or self.guild_id
        definition = self._command_definition(parts[0], 1, user_id, gid)
        values = {**(options or {}), **(attachments or {})}
        resolved: dict[str, Any] = {}
        opts = self._build_options(definition, parts[1:], values, resolved, gid)
        data: dict[str, Any] = {"name": parts[0], "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        self._command_identity(data, definition)
        return await self._create_interaction(2, user_id, data, cid)

    async def invoke_message_command(
        self, user_id: int, name: str, target_message: dict[str, Any]
    ) -> dict[str, Any]:
        """A user runs a message context-menu command (type 2, command type 3).

        Parameters
        ----------
        user_id : int
            The invoking member.
        name : str
            Command name, e.g. ``"Classify genre"``.
        target_message : dict
            The message it is run on (from :meth:`send_message` or :meth:`messages`).

        Returns
        -------
        dict
            The interaction payload sent.
        """
        stored = self._get_message(int(target_message["channel_id"]), int(target_message["id"]))
        definition = self._command_definition(
            name, 3, user_id, self._guild_of(stored.channel_id) or self.guild_id
        )
        # Message-command payloads carry full content even without MESSAGE_CONTENT.
        data: dict[str, Any] = {
            "name": name,
            "type": 3,
            "target_id": str(stored.data["id"]),
            "resolved": {"messages": {str(stored.data["id"]): self._gateway_message(stored)}},
        }
        self._command_identity(data, definition)
        return await self._create_interaction(2, user_id, data, stored.channel_id)

    async def click_button(
        self, user_id: int, message: dict[str, Any], custom_id: str, *, check: bool = True
    ) -> dict[str, Any]:
        """A user clicks a button on a bot message (INTERACTION_CREATE type 3).

        Parameters
        ----------
        user_id : int
            The clicking member.
        message : dict
            The bot's message carrying the button (an ephemeral one only for the user it was
            sent to).
        custom_id : str
            The button's custom id.
        check : bool
            Check, as the Discord client does, that the message (as it is now) shows an
            enabled button with that custom id to this user. ``False`` sends the id as given:
            a forged or stale custom id, to test how the bot copes with one.

        Returns
        -------
        dict
            The interaction payload sent.

        Raises
        ------
        LookupError
            With ``check``: no button with that custom id on the message, or an ephemeral
            message of another user.
        ValueError
            With ``check``: the button is disabled.
        """
        stored = self._get_message(int(message["channel_id"]), int(message["id"]))
        if check:
            self._check_visible(stored, user_id)
            button = self._find_component(stored, 2, custom_id)
            if button.get("disabled"):
                raise ValueError(f"button {custom_id!r} is disabled; it cannot be clicked")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._create_interaction(
            3, user_id, data, stored.channel_id, component_message=stored
        )

    async def choose_select(
        self,
        user_id: int,
        message: dict[str, Any],
        custom_id: str,
        values: list[str],
        *,
        check: bool = True,
    ) -> dict[str, Any]:
        """A user picks options in a string select on a bot message (type 3, component 3).

        Parameters
        ----------
        user_id : int
            The choosing member.
        message : dict
            The bot's message carrying the select (an ephemeral one only for the user it was
            sent to: e.g. from :meth:`interaction_responses` ``[i]["message"]``).
        custom_id : str
            The select's custom id.
        values : list of str
            The ``value`` of each option picked, in the order picked.
        check : bool
            Check, as the Discord client does, that the message (as it is now) shows this
            user an enabled string select with that custom id, that every value is one of its
            options (each at most once) and that their number lies within ``min_values`` and
            ``max_values`` (both 1 by default). ``False`` sends them as given (forged/stale).

        Returns
        -------
        dict
            The interaction payload sent (``data.values`` as given).

        Raises
        ------
        LookupError
            With ``check``: no string select with that custom id on the message, or an
            ephemeral message of another user.
        ValueError
            With ``check``: a value that is not an option, a value twice, too few or too many
            values, or a disabled select.
        """
        stored = self._get_message(int(message["channel_id"]), int(message["id"]))
        values = list(values)
        if check:
            self._check_visible(stored, user_id)
            select = self._find_component(stored, 3, custom_id)
            if select.get("disabled"):
                raise ValueError(f"select {custom_id!r} is disabled; nothing can be picked")
            self._check_select_values(select, values)
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        return await self._create_interaction(
            3, user_id, data, stored.channel_id, component_message=stored
        )

    def modal_of(self, interaction: dict[str, Any]) -> dict[str, Any] | None:
        """The modal the bot answered an interaction with (callback type 9), if any.

        Parameters
        ----------
        interaction : dict
            The interaction payload (from :meth:`invoke_slash`, :meth:`click_button`...).

        Returns
        -------
        dict or None
            ``{"custom_id", "title", "components"}`` as Discord shows it: the bot's body
            with a sequential ``id`` filled into every component that had none. None if the
            bot did not answer with a modal (or its modal body was refused).
        """
        inter = self._interactions[int(interaction["id"])]
        return json.loads(json.dumps(inter.modal)) if inter.modal is not None else None

    async def submit_modal(
        self,
        user_id: int,
        interaction: dict[str, Any],
        values: dict[str, str | list[str]],
    ) -> dict[str, Any]:
        """A user fills in and submits the modal the bot opened (INTERACTION_CREATE type 5).

        ``data.components`` mirrors the modal's layout as Discord sends it: an action row
        becomes ``{"type": 1, "id", "components": [...]}``, a Label (type 18)
        ``{"type": 18, "id", "component": {...}}``, a Text Display ``{"type": 10, "id"}``;
        a text input inside them ``{"type": 4, "id", "custom_id", "value"}`` and a string
        select ``{"type": 3, "id", "custom_id", "values"}``. A modal opened from a message
        component carries that ``message``, whose message an UPDATE_MESSAGE (7) or
        DEFERRED_UPDATE_MESSAGE (6) answer then edits.

        Parameters
        ----------
        user_id : int
            The submitting member: only the user who triggered the interaction sees the
            modal.
        interaction : dict
            The interaction the bot answered with the modal.
        values : dict
            ``custom_id -> text`` for text inputs (an input left out keeps its pre-filled
            ``value``, else ``""``), ``custom_id -> [option values]`` for string selects.

        Returns
        -------
        dict
            The MODAL_SUBMIT interaction payload sent.

        Raises
        ------
        LookupError
            If the bot did not answer with a modal, it was already submitted, another user
            submits it, or ``values`` names a custom id the modal does not have.
        ValueError
            If a value breaks the modal as the Discord client enforces it: a required input
            left empty, a length outside ``min_length``/``max_length``, a line break in a
            short (style 1) input, or a select value that is not an option / a wrong count.
        NotImplementedError
            For modal components other than text inputs and string selects (user/role/
            channel selects, file uploads, radio groups, checkboxes).
        """
        inter = self._interactions.get(int(interaction["id"]))
        if inter is None or inter.modal is None:
            raise LookupError(f"interaction {interaction['id']} was not answered with a modal")
        if inter.modal_submitted:
            raise LookupError("this modal was already submitted; Discord closed it")
        opener = int(inter.payload["member"]["user"]["id"])
        if user_id != opener:
            raise LookupError(f"only user {opener}, who opened it, sees this modal")
        modal = inter.modal
        unused = dict(values)
        components = [self._submitted(c, unused) for c in modal["components"]]
        if unused:
            raise LookupError(
                f"the modal has no input with custom id {sorted(unused)}; it has "
                f"{[c['custom_id'] for c in _walk(modal['components']) if 'custom_id' in c]}"
            )
        inter.modal_submitted = True
        data = {"custom_id": modal["custom_id"], "components": components}
        source = (
            self._messages.get(inter.component_message_id) if inter.component_message_id else None
        )
        return await self._create_interaction(
            5,
            user_id,
            data,
            int(inter.payload["channel_id"]),
            component_message=source if source is not None and not source.deleted else None,
            opened_from=int(inter.payload["id"]),
        )

    def notify(self) -> None:
        """Re-run pending :meth:`wait_for` predicates now.

        The fake re-checks predicates whenever its own state changes (requests, messages,
        heartbeats...). A predicate that also looks at state outside the fake (a list a
        client event handler fills) should call this when that state changes; otherwise it
        is only re-checked at the next fake event (at worst the next heartbeat).
        """
        self._changed()

    async def wait_for(self, predicate: Callable[[FakeDiscord], Any], timeout: float = 30) -> Any:
        """Wait until ``predicate(fake)`` is truthy; re-checked on every state change.

        Event-driven: no polling. See :meth:`notify` for predicates on outside state.

        Parameters
        ----------
        predicate : callable
            Called with this fake; its truthy result is returned.
        timeout : float
            Seconds before giving up.

        Returns
        -------
        Any
            The predicate's truthy value.

        Raises
        ------
        TimeoutError
            With the last requests in the message, to make failures readable.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = self._change
            result = predicate(self)
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n  ".join(
                    f"{r.method} {r.path} -> {r.status} {r.code or ''}" for r in self.requests[-8:]
                )
                raise TimeoutError(
                    f"FakeDiscord.wait_for timed out after {timeout}s; last requests:\n  {recent}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def messages(
        self,
        channel_id: int | None = None,
        *,
        author_id: int | None = None,
        guild_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Current (edited, not deleted) non-ephemeral messages in a channel, oldest first.

        Parameters
        ----------
        channel_id : int or None
            Channel (default: :attr:`channel_id`).
        author_id : int or None
            Author filter (default: the bot).
        guild_id : int or None
            This guild's ``#general`` (:meth:`channel_of`) instead.

        Returns
        -------
        list of dict
            Message objects (with ``embeds``, ``attachments``, ``interaction_metadata``...).
        """
        cid = self._pick_channel(channel_id, guild_id)
        author = str(author_id or self.bot_user_id)
        return [
            json.loads(json.dumps(m.data))
            for m in self._messages.values()
            if m.channel_id == cid
            and not m.deleted
            and not m.ephemeral
            and m.data["author"]["id"] == author
        ]

    def message(self, message_id: int | str) -> dict[str, Any]:
        """Current state of any message (also ephemeral or deleted ones: see ``deleted``)."""
        stored = self._messages[int(message_id)]
        return {**json.loads(json.dumps(stored.data)), "deleted": stored.deleted}

    def interaction_responses(self, inter_id: int | str) -> list[dict[str, Any]]:
        """Everything the bot did with an interaction token, in order.

        Each entry has ``kind`` (``callback``, ``edit_original``, ``delete_original``,
        ``followup``, ``edit_followup``, ``delete_followup``), ``status`` and ``code`` (error
        answers are listed too), ``type`` (callback type), ``body``, ``flags``,
        ``ephemeral``, ``message_id`` and ``message`` (the resulting message).

        Parameters
        ----------
        inter_id : int or str
            Interaction id (``inter["id"]``).

        Returns
        -------
        list of dict
            The entries.
        """
        return json.loads(json.dumps(self._interactions[int(inter_id)].responses))

    @property
    def unknown_requests(self) -> list[RequestRecord]:
        """Requests to routes the fake (and Discord) does not know."""
        return [r for r in self.requests if r.route is None]

    @property
    def invalid_requests(self) -> list[RequestRecord]:
        """Requests refused as an Invalid Form Body (400 / 50035)."""
        return [r for r in self.requests if r.code == 50035]

    async def drop_connection(
        self, code: int | None = None, *, shard_id: int | None = None
    ) -> None:
        """Break the bot's websocket; the session stays resumable (RESUME replays).

        Parameters
        ----------
        code : int or None
            None aborts the TCP connection (network failure); an int sends that close code.
        shard_id : int or None
            The shard whose connection breaks (needed when the bot runs several).
        """
        await self.gateway.drop(code, shard_id=shard_id)

    async def request_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send opcode 7 RECONNECT, as Discord does before restarting a gateway node."""
        await self.gateway.send_op(RECONNECT, None, shard_id=shard_id)

    # ==================================================================================
    # internals: change notification, payloads
    # ==================================================================================

    def _changed(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._change.set()
        self._change = asyncio.Event()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _roles_in(self, user_id: int, guild_id: int) -> list[int]:
        # A member's roles in one guild (members hold roles of every guild).
        own = self._guilds[guild_id]["role_ids"]
        return [rid for rid in self._members[user_id]["roles"] if rid in own]

    def _member_payload(self, user_id: int, guild_id: int | None = None) -> dict[str, Any]:
        info = self._members[user_id]
        roles = self._roles_in(user_id, guild_id or self.guild_id)
        return payloads.member(self._users[user_id], roles, info["at"])

    def _channel_payload(self, channel_id: int) -> dict[str, Any]:
        return dict(self._channels[channel_id])

    def _guild_of(self, channel_id: int) -> int | None:
        # The guild a channel belongs to; None for a DM.
        guild = self._channels[channel_id].get("guild_id")
        return int(guild) if guild else None

    def _pick_channel(self, channel_id: int | None, guild_id: int | None) -> int:
        if channel_id:
            return channel_id
        return self.channel_of(guild_id) if guild_id else self.channel_id

    def _is_dm(self, channel_id: int) -> bool:
        return self._channels[channel_id]["type"] == 1

    def _ready_payload(self, session_id: str, guild_ids: list[int]) -> dict[str, Any]:
        return {
            "v": 10,
            "user": {
                **self._users[self.bot_user_id],
                "verified": True,
                "mfa_enabled": False,
                "email": None,
            },
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guild_ids],
            "session_id": session_id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["rotterdam"],
            "application": {"id": str(self.application_id), "flags": self._app_flags()},
            "auth_session_id_hash": secrets.token_hex(8),
            "_trace": ['["fake-discord-gateway",{"micros":0}]'],
        }

    @staticmethod
    def _app_flags() -> int:
        # GATEWAY_MESSAGE_CONTENT_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED: an unverified
        # bot with those privileged intents switched on in the portal.
        return (1 << 19) | (1 << 15)

    def _guild_create_payload(self, intents: int, guild_id: int | None = None) -> dict[str, Any]:
        gid = guild_id or self.guild_id
        guild = self._guilds[gid]
        # Without GUILD_MEMBERS Discord only sends the bot's own member.
        member_ids = list(self._members) if intents & GUILD_MEMBERS else [self.bot_user_id]
        return {
            "id": str(gid),
            "name": guild["name"],
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [self._roles[rid] for rid in guild["role_ids"]],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(guild["channel_id"]),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": self._members[self.bot_user_id]["at"],
            "large": False,
            "unavailable": False,
            "member_count": len(self._members),
            "voice_states": [],
            "members": [self._member_payload(uid, gid) for uid in member_ids],
            "channels": [
                {k: v for k, v in c.items() if k != "guild_id"}
                for c in self._channels.values()
                if c.get("guild_id") == str(gid)
            ],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    def _app_info(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "genre-bot",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": secrets.token_hex(32),
            "flags": self._app_flags(),
            "owner": self._users[self.owner_id],
            "team": None,
            "bot": self._users[self.bot_user_id],
            "rpc_origins": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "tags": [],
            "install_params": None,
            "integration_types_config": {"0": {}},
            "approximate_guild_count": len(self._guilds),
        }

    # -- messages ---------------------------------------------------------------------

    def _dm_channel_for(self, user_id: int) -> int:
        if user_id not in self._dm_channels:
            cid = self._snowflake()
            self._channels[cid] = payloads.dm_channel(cid, self._users[user_id])
            self._dm_channels[user_id] = cid
        return self._dm_channels[user_id]

    def _get_message(self, channel_id: int, message_id: int) -> _Message:
        stored = self._messages.get(message_id)
        if stored is None or stored.deleted or stored.channel_id != channel_id:
            raise _unknown("Message", 10008)
        return stored

    def _mentions(self, content: str, extra: list[int]) -> list[dict[str, Any]]:
        ids = [int(m) for m in re.findall(r"<@!?(\d+)>", content or "")] + extra
        seen: list[int] = []
        for uid in ids:
            if uid in self._users and uid not in seen:
                seen.append(uid)
        return [self._users[uid] for uid in seen]

    def _new_message(
        self,
        channel_id: int,
        author_id: int,
        body: dict[str, Any],
        *,
        reference: dict[str, Any] | None = None,
        flags: int = 0,
        interaction: _Interaction | None = None,
        msg_type: int | None = None,
    ) -> _Message:
        mid = self._snowflake()
        replied: list[int] = []
        data: dict[str, Any] = {
            "id": str(mid),
            "type": 0,
            "channel_id": str(channel_id),
            "author": self._users[author_id],
            "content": body.get("content") or "",
            "timestamp": payloads.iso_now(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts")),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": list(body.get("attachments") or []),
            "embeds": payloads.normalise_embeds(body.get("embeds")),
            "pinned": False,
            "flags": flags,
            "components": list(body.get("components") or []),
        }
        if reference is not None:
            ref = self._get_message(int(reference["channel_id"]), int(reference["id"]))
            guild = self._guild_of(channel_id)
            data["type"] = 19  # REPLY
            data["message_reference"] = {
                "type": 0,
                "message_id": ref.data["id"],
                "channel_id": ref.data["channel_id"],
                **({} if guild is None else {"guild_id": str(guild)}),
            }
            data["referenced_message"] = json.loads(json.dumps(ref.data))
            if (body.get("allowed_mentions") or {}).get("replied_user", True):
                replied.append(int(ref.data["author"]["id"]))
        if interaction is not None:
            data["type"] = msg_type if msg_type is not None else 20
            data["webhook_id"] = str(self.application_id)
            data["application_id"] = str(self.application_id)
            data["interaction_metadata"] = self._interaction_metadata(interaction)
        data["mentions"] = self._mentions(data["content"], replied)
        stored = _Message(
            data=data,
            channel_id=channel_id,
            ephemeral=bool(flags & payloads.FLAG_EPHEMERAL),
            interaction_id=int(interaction.payload["id"]) if interaction else None,
        )
        self._messages[mid] = stored
        self._changed()
        return stored

    def _interaction_metadata(self, interaction: _Interaction) -> dict[str, Any]:
        inter = interaction.payload
        meta: dict[str, Any] = {
            "id": inter["id"],
            "type": inter["type"],
            "user": inter["member"]["user"],
            "authorizing_integration_owners": {"0": inter["guild_id"]},
            **({"name": inter["data"]["name"]} if "name" in inter["data"] else {}),
        }
        if inter["type"] == 3 and interaction.component_message_id is not None:
            meta["interacted_message_id"] = str(interaction.component_message_id)
        if inter["type"] == 5 and interaction.opened_from is not None:
            opener = self._interactions[interaction.opened_from]
            meta["triggering_interaction_metadata"] = self._interaction_metadata(opener)
        return meta

    def _gateway_message(self, stored: _Message) -> dict[str, Any]:
        data = json.loads(json.dumps(stored.data))
        gid = self._guild_of(stored.channel_id)
        if gid is not None:
            data["guild_id"] = str(gid)
            data["member"] = {
                k: v
                for k, v in self._member_payload(int(data["author"]["id"]), gid).items()
                if k != "user"
            }
        return data

    def _content_is_exempt(self, stored: _Message) -> bool:
        # MESSAGE_CONTENT exemptions: the bot's own messages, DMs, and mentions of the bot.
        data = stored.data
        return (
            data["author"]["id"] == str(self.bot_user_id)
            or self._is_dm(stored.channel_id)
            or any(u["id"] == str(self.bot_user_id) for u in data["mentions"])
        )

    async def _dispatch_message(self, event: str, stored: _Message) -> None:
        if stored.ephemeral:
            return  # bots never receive ephemeral messages over the gateway
        intent = DIRECT_MESSAGES if self._is_dm(stored.channel_id) else GUILD_MESSAGES
        await self.gateway.dispatch(
            event,
            self._gateway_message(stored),
            intent=intent,
            strip_content=not self._content_is_exempt(stored),
            guild_id=self._guild_of(stored.channel_id),
        )

    async def _dispatch_reaction(
        self, event: str, stored: _Message, user_id: int, emoji: str
    ) -> None:
        name, _, eid = emoji.partition(":")
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(stored.channel_id),
            "message_id": stored.data["id"],
            "emoji": {"id": eid or None, "name": name},
            "burst": False,
            "type": 0,
        }
        gid = self._guild_of(stored.channel_id)
        dm = gid is None
        if gid is not None:
            data["guild_id"] = str(gid)
            if event == "MESSAGE_REACTION_ADD":
                data["member"] = self._member_payload(user_id, gid)
                data["message_author_id"] = stored.data["author"]["id"]
        intent = DIRECT_MESSAGE_REACTIONS if dm else GUILD_MESSAGE_REACTIONS
        await self.gateway.dispatch(event, data, intent=intent, guild_id=gid)

    def _apply_files(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[_File],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Attachments of a created/edited message: kept existing ones + uploaded files."""
        declared = body.get("attachments")
        if declared is None:
            kept = list(existing)
            meta: dict[int, dict[str, Any]] = {}
        else:
            keep_ids = {str(a.get("id")) for a in declared}
            kept = [a for a in existing if a["id"] in keep_ids]
            meta = {}
            for a in declared:
                with contextlib.suppress(TypeError, ValueError):
                    meta[int(a["id"])] = a
        out = kept
        for index, f in enumerate(files):
            m = re.fullmatch(r"files\[(\d+)\]", f.field)
            n = int(m.group(1)) if m else index
            info = meta.get(n, {})
            filename = info.get("filename") or f.filename
            ctype = f.content_type
            if not ctype or ctype == "application/octet-stream":
                ctype = payloads.guess_content_type(filename)
            aid = self._snowflake()
            path = f"/attachments/{channel_id}/{aid}/{filename}"
            self._cdn[path] = cdn.serve_bytes(f.data, ctype or "application/octet-stream")
            att = payloads.attachment(aid, filename, len(f.data), self.base_url + path, ctype)
            if info.get("description"):
                att["description"] = info["description"]
            out.append(att)
        return out

    def _edit_message(self, stored: _Message, body: dict[str, Any], files: list[_File]) -> None:
        """Apply an edit; refuse (50006, message unchanged) one that would leave it empty."""
        data = json.loads(json.dumps(stored.data))
        if "content" in body:
            data["content"] = body["content"] or ""
            data["mentions"] = self._mentions(data["content"], [])
        if "embeds" in body:
            data["embeds"] = payloads.normalise_embeds(body["embeds"])
        if "components" in body:
            data["components"] = list(body["components"] or [])
        if "attachments" in body or files:
            data["attachments"] = self._apply_files(
                stored.channel_id, body, files, data["attachments"]
            )
        if body.get("flags") is not None:
            # Only SUPPRESS_EMBEDS may be toggled by an edit; other flags stay.
            keep = data["flags"] & ~payloads.FLAG_SUPPRESS_EMBEDS
            data["flags"] = keep | (int(body["flags"]) & payloads.FLAG_SUPPRESS_EMBEDS)
        data["flags"] &= ~payloads.FLAG_LOADING
        if not (data["content"] or data["embeds"] or data["attachments"] or data["components"]):
            raise ApiError(400, 50006, "Cannot send an empty message")
        data["edited_timestamp"] = payloads.iso_now()
        stored.data = data
        self._changed()

    # -- interactions -----------------------------------------------------------------

    def _command_definition(
        self, name: str, type_: int, user_id: int, guild_id: int
    ) -> dict[str, Any] | None:
        definition = self.commands.find(name, type=type_, guild_id=guild_id)
        if definition is None:
            if self.require_synced:
                known = self.commands.names(guild_id) + self.commands.names(None)
                raise LookupError(
                    f"command {name!r} (type {type_}) was never synced; Discord would not "
                    f"offer it. Synced: {known}"
                )
            return None
        needed = definition.get("default_member_permissions")
        if needed is not None:
            perms = self.permissions_of(user_id, guild_id)
            if int(needed) & perms != int(needed) and not perms & payloads.ADMINISTRATOR:
                raise PermissionError(
                    f"user {user_id} lacks default_member_permissions={needed} for {name!r}"
                )
        return definition

    def _command_identity(self, data: dict[str, Any], definition: dict[str, Any] | None) -> None:
        if definition is not None:
            data["id"] = definition["id"]
            if definition.get("guild_id"):
                data["guild_id"] = definition["guild_id"]
        else:
            data["id"] = str(self._snowflake())

    def _build_options(
        self,
        definition: dict[str, Any] | None,
        path: list[str],
        values: dict[str, Any],
        resolved: dict[str, Any],
        guild_id: int | None = None,
    ) -> list[dict[str, Any]]:
        defs = (definition or {}).get("options") or []
        if path:
            sub = next((o for o in defs if o["name"] == path[0]), None)
            if sub is None and definition is not None:
                raise LookupError(f"unknown subcommand {path[0]!r}")
            sub_type = sub["type"] if sub else (2 if len(path) > 1 else 1)
            inner = self._build_options(sub, path[1:], values, resolved, guild_id)
            return [{"name": path[0], "type": sub_type, "options": inner}]
        by_name = {o["name"]: o for o in defs}
        out = []
        for opt_name, value in values.items():
            opt_def = by_name.get(opt_name)
            if opt_def is None and definition is not None:
                raise LookupError(f"unknown option {opt_name!r}; defined: {sorted(by_name)}")
            opt_type = opt_def["type"] if opt_def else self._infer_option_type(value)
            out.append(
                {
                    "name": opt_name,
                    "type": opt_type,
                    "value": self._option_value(opt_type, value, resolved, guild_id),
                }
            )
        for opt_def in defs:
            if opt_def.get("required") and opt_def["name"] not in values:
                raise ValueError(f"required option {opt_def['name']!r} missing")
        return out

    @staticmethod
    def _infer_option_type(value: Any) -> int:
        if isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return 4
        if isinstance(value, float):
            return 10
        if isinstance(value, dict) and "filename" in value:
            return 11
        return 3

    def _option_value(
        self, opt_type: int, value: Any, resolved: dict[str, Any], guild_id: int | None = None
    ) -> Any:
        if opt_type == 11:
            resolved.setdefault("attachments", {})[str(value["id"])] = value
            return str(value["id"])
        if opt_type in (6, 9):
            uid = int(value)
            resolved.setdefault("users", {})[str(uid)] = self._users[uid]
            member = {
                k: v for k, v in self._member_payload(uid, guild_id).items() if k != "user"
            }
            member["permissions"] = str(self.permissions_of(uid, guild_id))
            resolved.setdefault("members", {})[str(uid)] = member
            return str(uid)
        if opt_type == 7:
            cid = int(value)
            ch = self._channels[cid]
            resolved.setdefault("channels", {})[str(cid)] = {
                "id": ch["id"],
                "name": ch.get("name"),
                "type": ch["type"],
                "permissions": str(payloads.ALL_PERMISSIONS),
            }
            return str(cid)
        return value

    # -- components and modals ----------------------------------------------------------

    def _check_visible(self, stored: _Message, user_id: int) -> None:
        """An ephemeral message is only shown to the user of the interaction it answers."""
        if not stored.ephemeral or stored.interaction_id is None:
            return
        owner = self._interactions[stored.interaction_id].payload["member"]["user"]["id"]
        if owner != str(user_id):
            raise LookupError(
                f"message {stored.data['id']} is ephemeral, shown only to user {owner}; "
                f"user {user_id} cannot see its components"
            )

    @staticmethod
    def _find_component(stored: _Message, type_: int, custom_id: str) -> dict[str, Any]:
        found = list(_walk(stored.data.get("components")))
        for comp in found:
            if comp.get("type") == type_ and comp.get("custom_id") == custom_id:
                return comp
        kind = {2: "button", 3: "string select"}.get(type_, f"type {type_} component")
        present = [(c["type"], c["custom_id"]) for c in found if "custom_id" in c]
        raise LookupError(
            f"message {stored.data['id']} has no {kind} with custom_id {custom_id!r}; "
            f"its (type, custom_id) are {present}"
        )

    @staticmethod
    def _check_select_values(select: dict[str, Any], values: Any) -> None:
        """What the Discord client lets a user pick in a string select."""
        cid = select.get("custom_id")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"select {cid!r}: values must be a list of str, got {values!r}")
        options = [o.get("value") for o in select.get("options") or []]
        unknown = [v for v in values if v not in options]
        if unknown:
            raise ValueError(f"select {cid!r} has no option {unknown}; options: {options}")
        if len(set(values)) != len(values):
            raise ValueError(f"select {cid!r}: an option can be picked once, got {values}")
        low = select.get("min_values")
        low = 1 if low is None else int(low)
        if select.get("required") is False:  # modal selects only
            low = 0
        high = select.get("max_values")
        high = 1 if high is None else int(high)
        if not low <= len(values) <= high:
            raise ValueError(
                f"select {cid!r} takes {low} to {high} values, got {len(values)}: {values}"
            )

    @staticmethod
    def _check_text(text_input: dict[str, Any], value: Any) -> None:
        """What the Discord client lets a user submit in a text input."""
        cid = text_input.get("custom_id")
        if not isinstance(value, str):
            raise ValueError(f"text input {cid!r}: value must be a str, got {value!r}")
        if value == "":
            if text_input.get("required") is not False:  # required unless said otherwise
                raise ValueError(f"text input {cid!r} is required")
            return
        low = int(text_input.get("min_length") or 0)
        high = int(text_input.get("max_length") or 4000)
        if not low <= len(value) <= high:
            raise ValueError(
                f"text input {cid!r} takes {low} to {high} characters, got {len(value)}"
            )
        if text_input.get("style") == 1 and "\n" in value:
            raise ValueError(f"text input {cid!r} is a short (one-line) input")

    def _submitted(self, comp: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """A modal component as a MODAL_SUBMIT reports it; takes its value out of ``values``."""
        type_ = comp.get("type")
        if type_ == 1:
            children = [self._submitted(c, values) for c in comp.get("components") or []]
            return {"type": 1, "id": comp["id"], "components": children}
        if type_ == 18:
            inner = self._submitted(comp["component"], values)
            return {"type": 18, "id": comp["id"], "component": inner}
        if type_ == 10:
            return {"type": 10, "id": comp["id"]}
        cid = comp.get("custom_id")
        if type_ == 4:
            value = values.pop(cid, comp.get("value") or "")
            self._check_text(comp, value)
            return {"type": 4, "id": comp["id"], "custom_id": cid, "value": value}
        if type_ == 3:
            defaults = [o["value"] for o in comp.get("options") or [] if o.get("default")]
            picked = values.pop(cid, defaults)
            self._check_select_values(comp, picked)
            return {"type": 3, "id": comp["id"], "custom_id": cid, "values": list(picked)}
        raise NotImplementedError(f"submitting modal component type {type_} ({cid!r})")

    async def _create_interaction(
        self,
        type_: int,
        user_id: int,
        data: dict[str, Any],
        channel_id: int,
        *,
        component_message: _Message | None = None,
        opened_from: int | None = None,
    ) -> dict[str, Any]:
        if user_id not in self._members:
            raise LookupError(f"unknown user {user_id}; use add_user()")
        gid = self._guild_of(channel_id)
        if gid is None:
            raise NotImplementedError("the fake only runs interactions in guild channels")
        iid = self._snowflake()
        token = f"aW50ZXJhY3Rpb246{iid}:{secrets.token_urlsafe(48)}"
        member = self._member_payload(user_id, gid)
        member["permissions"] = str(self.permissions_of(user_id, gid))
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": type_,
            "data": data,
            "guild": {"id": str(gid), "locale": "en-US", "features": []},
            "guild_id": str(gid),
            "channel": self._channel_payload(channel_id),
            "channel_id": str(channel_id),
            "member": member,
            "token": token,
            "version": 1,
            "app_permissions": str(self.permissions_of(self.bot_user_id, gid)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(gid)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
        }
        if component_message is not None:
            payload["message"] = self._gateway_message(component_message)
        inter = _Interaction(
            payload=payload,
            created=asyncio.get_running_loop().time(),
            component_message_id=int(component_message.data["id"]) if component_message else None,
            opened_from=opened_from,
        )
        self._interactions[iid] = inter
        self._tokens[token] = iid
        await self.gateway.dispatch("INTERACTION_CREATE", payload, guild_id=gid)
        return json.loads(json.dumps(payload))

    def _interaction_for_webhook(self, app_id: str, token: str) -> _Interaction:
        iid = self._tokens.get(token)
        if iid is None or app_id != str(self.application_id):
            raise _unknown("Webhook", 10015)
        inter = self._interactions[iid]
        if not inter.acked:
            # The token only becomes a usable webhook once the interaction was acknowledged.
            raise _unknown("Webhook", 10015)
        return inter

    # ==================================================================================
    # REST plumbing
    # ==================================================================================

    def _route_table(self) -> list[_Route]:
        # (method, OpenAPI template, handler, options); the regex is derived from the template.
        wh = "/webhooks/{webhook_id}/{webhook_token}"
        msg = "/channels/{channel_id}/messages/{message_id}"
        cmds = "/applications/{application_id}/commands"
        guild_cmds = "/applications/{application_id}/guilds/{guild_id}/commands"
        public: dict[str, Any] = {"auth": False}

        def logged(kind: str, message_body: bool = True) -> dict[str, Any]:
            return {"auth": False, "message_body": message_body, "kind": kind}

        table: list[tuple[str, str, Any, dict[str, Any]]] = [
            ("GET", "/gateway", self._get_gateway, public),
            ("GET", "/gateway/bot", self._get_gateway_bot, {}),
            ("GET", "/users/@me", self._get_me, {}),
            ("GET", "/users/{user_id}", self._get_user, {}),
            ("POST", "/users/@me/channels", self._create_dm, {}),
            ("GET", "/oauth2/applications/@me", self._get_app, {}),
            ("GET", "/applications/@me", self._get_app, {}),
            ("GET", cmds, self._get_commands, {}),
            ("PUT", cmds, self._put_commands, {}),
            ("POST", cmds, self._post_command, {}),
            ("GET", guild_cmds, self._get_commands, {}),
            ("PUT", guild_cmds, self._put_commands, {}),
            ("POST", guild_cmds, self._post_command, {}),
            ("GET", "/guilds/{guild_id}", self._get_guild, {}),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels, {}),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member, {}),
            ("GET", "/channels/{channel_id}", self._get_channel, {}),
            ("POST", "/channels/{channel_id}/typing", self._typing, {}),
            ("GET", "/channels/{channel_id}/messages", self._list_messages, {}),
            ("POST", "/channels/{channel_id}/messages", self._post_message, {"message_body": True}),
            ("GET", msg, self._get_message_route, {}),
            ("PATCH", msg, self._patch_message, {"message_body": True}),
            ("DELETE", msg, self._delete_message, {}),
            ("PUT", msg + "/reactions/{emoji_name}/@me", self._put_reaction, {}),
            ("DELETE", msg + "/reactions/{emoji_name}/@me", self._delete_reaction, {}),
            (
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                self._callback,
                logged("callback", message_body=False),
            ),
            ("GET", wh + "/messages/@original", self._get_original, public),
            ("PATCH", wh + "/messages/@original", self._patch_original, logged("edit_original")),
            (
                "DELETE",
                wh + "/messages/@original",
                self._delete_original,
                logged("delete_original"),
            ),
            ("POST", wh, self._followup, logged("followup")),
            ("GET", wh + "/messages/{message_id}", self._get_followup, public),
            ("PATCH", wh + "/messages/{message_id}", self._patch_followup, logged("edit_followup")),
            (
                "DELETE",
                wh + "/messages/{message_id}",
                self._delete_followup,
                logged("delete_followup"),
            ),
        ]
        return [
            _Route(method, _template_regex(template), template, handler, **options)
            for method, template, handler, options in table
        ]

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str], bool]:
        path_known = False
        for route in self._routes:
            match = route.regex.fullmatch(path)
            if match:
                path_known = True
                if route.method == method:
                    return route, match.groupdict(), True
        return None, {}, path_known

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if (
                fault.remaining > 0
                and fault.method in ("*", method)
                and fault.pattern.fullmatch(path)
            ):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _ratelimit_headers(bucket: str, remaining: int = 4) -> dict[str, str]:
        reset_after = 1.0
        return {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    def _fault_response(self, fault: _Fault, bucket: str) -> web.Response:
        if fault.status == 429:
            headers = {
                **self._ratelimit_headers(bucket, remaining=0),
                "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
                "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
                "Retry-After": str(max(1, round(fault.retry_after))),
                "X-RateLimit-Scope": "global" if fault.global_ else "user",
                # discord.py treats a 429 without `Via` as a Cloudflare ban and gives up.
                "Via": "1.1 google",
            }
            if fault.global_:
                headers["X-RateLimit-Global"] = "true"
            body = {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.global_,
                "code": 0,
            }
            return _json_response(body, status=429, headers=headers)
        body = {"message": f"{fault.status}: Injected failure", "code": 0}
        return _json_response(body, status=fault.status)

    def _faulted(
        self, fault: _Fault, bucket: str, record: RequestRecord, route: _Route | None,
        params: dict[str, str],
    ) -> web.Response:
        """Answer with an injected fault, recorded like any other answer."""
        response = self._fault_response(fault, bucket)
        record.status, record.code = response.status, 0
        if route is not None and route.kind:
            self._log_interaction(route.kind, params, record, None)
        self._changed()
        return response

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_File]]:
        ctype = request.content_type
        files: list[_File] = []
        if ctype.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            async for part in reader:
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(await part.text())
                elif part.filename is not None:
                    data = bytes(await part.read(decode=False))
                    files.append(_File(name, part.filename, data, part.headers.get("Content-Type")))
            return body, files
        raw = await request.read()
        if not raw:
            return None, files
        if ctype != "application/json":
            raise _form_error([], "CONTENT_TYPE_INVALID", f"Expected JSON, got {ctype!r}")
        return json.loads(raw), files

    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0][len(API_PREFIX) :]
        # Decode per segment so an encoded "/" inside an emoji cannot split the path.
        path = "/".join(unquote(s) for s in raw_path.split("/"))
        method = request.method
        record = RequestRecord(method, path, dict(request.query), None)
        self.requests.append(record)
        route, params, path_known = self._match(method, raw_path)
        if route is not None:
            params = {k: unquote(v) for k, v in params.items()}
            record.route = route.template
        bucket = f"fake-{abs(hash((method, route.template if route else path))) % 10**8:x}"
        try:
            fault = self._take_fault(method, path)
            if fault is not None and not fault.after_handling:
                # Drain the unread body first, or the keep-alive connection is left broken.
                await request.release()
                return self._faulted(fault, bucket, record, route, params)
            if route is None:
                if path_known:
                    raise ApiError(405, 0, "405: Method Not Allowed")
                raise ApiError(404, 0, "404: Not Found")
            if route.auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            try:
                body, files = await self._read_body(request)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ApiError(400, 50109, "The request body contains invalid JSON.") from exc
            record.json = body
            record.files = [
                {
                    "field": f.field,
                    "filename": f.filename,
                    "size": len(f.data),
                    "content_type": f.content_type,
                }
                for f in files
            ]
            if sum(len(f.data) for f in files) > self.upload_limit:
                raise ApiError(413, 40005, "Request entity too large")
            if body is not None and self.validate:
                errors = spec.schema_errors(route.template, method, body)
                if route.message_body and not errors:
                    errors = spec.extra_message_errors(body)
                if errors:
                    raise ApiError(400, 50035, "Invalid Form Body", errors)
            ctx = _Ctx(request, params, body, files, dict(request.query))
            status, result = await route.handler(ctx)
        except ApiError as err:
            await request.release()
            record.status, record.code, record.errors = err.status, err.code, err.errors
            if route is not None and route.kind:
                self._log_interaction(route.kind, params, record, None)
            self._changed()
            return _json_response(
                err.body(), status=err.status, headers=self._ratelimit_headers(bucket)
            )
        if fault is not None:  # handled, but the answer is lost
            return self._faulted(fault, bucket, record, route, params)
        record.status = status
        if route.kind:
            self._log_interaction(route.kind, params, record, ctx.message)
        self._changed()
        headers = self._ratelimit_headers(bucket)
        if status == 204:
            return web.Response(status=204, headers=headers)
        return _json_response(result, status=status, headers=headers)

    def _log_interaction(
        self, kind: str, params: dict[str, str], record: RequestRecord, stored: _Message | None
    ) -> None:
        token = params.get("interaction_token") or params.get("webhook_token")
        inter = self._interactions.get(self._tokens.get(token or "", -1))
        if inter is None:
            return
        body = record.json if isinstance(record.json, dict) else {}
        flags_from = (body.get("data") or {}) if kind == "callback" else body
        inter.responses.append(
            {
                "kind": kind,
                "status": record.status,
                "code": record.code,
                "errors": record.errors,
                "type": body.get("type") if kind == "callback" else None,
                "body": record.json,
                "flags": int(flags_from.get("flags") or 0),
                "ephemeral": bool(stored and stored.ephemeral),
                "message_id": stored.data["id"] if stored else None,
                "message": json.loads(json.dumps(stored.data)) if stored else None,
            }
        )

    async def _cdn_dispatch(self, request: web.Request) -> web.StreamResponse:
        record = cdn.Download(request.path, request.method)
        self.downloads.append(record)
        handler = self._cdn.get(request.path)
        if handler is None or request.method not in ("GET", "HEAD"):
            record.status, record.complete = 404, True
            self._changed()
            return web.Response(status=404, text="Not Found")
        serve = getattr(handler, "serve", None)  # duck-typed: cdn.BodyHandler records live
        if serve is not None:
            return await serve(request, record, self._changed)
        try:
            response = await handler(request)
        except ConnectionError:
            record.aborted = True
            self._changed()
            raise
        record.status = response.status
        record.bytes_sent = getattr(response, "body_length", 0) or 0
        record.complete = True
        self._changed()
        return response

    # ==================================================================================
    # REST route handlers
    # ==================================================================================

    async def _get_gateway(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _get_gateway_bot(self, ctx: _Ctx) -> tuple[int, Any]:
        # Discord recommends about one shard per 1,000 guilds.
        shards = self.recommended_shards or max(
            1, math.ceil(len(self._guilds) / GUILDS_PER_RECOMMENDED_SHARD)
        )
        return 200, {
            "url": self.gateway_url,
            "shards": shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 86_400_000,
                "max_concurrency": 1,
            },
        }

    async def _get_me(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, {**self._users[self.bot_user_id], "verified": True, "mfa_enabled": False}

    async def _get_user(self, ctx: _Ctx) -> tuple[int, Any]:
        user = self._users.get(int(ctx.params["user_id"]))
        if user is None:
            raise _unknown("User", 10013)
        return 200, user

    async def _create_dm(self, ctx: _Ctx) -> tuple[int, Any]:
        uid = int((ctx.body or {}).get("recipient_id", 0))
        if uid not in self._users:
            raise _unknown("User", 10013)
        return 200, self._channel_payload(self._dm_channel_for(uid))

    async def _get_app(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._app_info()

    def _check_scope(self, ctx: _Ctx) -> int | None:
        if ctx.params["application_id"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        guild = ctx.params.get("guild_id")
        if guild is not None and int(guild) not in self._guilds:
            raise ApiError(403, 50001, "Missing Access")
        return int(guild) if guild is not None else None

    def _store_command(
        self, body: dict[str, Any], guild_id: int | None, existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        cmd = payloads.strip_nulls(dict(body))
        cmd.setdefault("type", 1)
        if cmd["type"] != 1:
            cmd["description"] = ""
        cmd["id"] = existing["id"] if existing else str(self._snowflake())
        cmd["application_id"] = str(self.application_id)
        cmd["version"] = str(self._snowflake())
        cmd.setdefault("default_member_permissions", None)
        if cmd["default_member_permissions"] is not None:
            cmd["default_member_permissions"] = str(cmd["default_member_permissions"])
        cmd.setdefault("nsfw", False)
        cmd.setdefault("options", [])
        if guild_id is not None:
            cmd["guild_id"] = str(guild_id)
        else:
            cmd.setdefault("contexts", None)
            cmd.setdefault("integration_types", [0])
        return cmd

    def _check_command_limits(self, commands: list[dict[str, Any]]) -> None:
        # Discord: names unique per type; at most 100 slash, 5 user and 5 message commands.
        seen: set[tuple[int, str]] = set()
        counts = {1: 0, 2: 0, 3: 0}
        for index, cmd in enumerate(commands):
            key = (int(cmd.get("type") or 1), cmd["name"])
            if key in seen:
                raise _form_error(
                    [str(index), "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique ({cmd['name']})",
                )
            seen.add(key)
            counts[key[0]] = counts.get(key[0], 0) + 1
        if counts[1] > 100 or counts[2] > 5 or counts[3] > 5:
            raise ApiError(400, 30032, "Maximum number of application commands reached")

    async def _get_commands(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self.commands.scope(self._check_scope(ctx))

    async def _put_commands(self, ctx: _Ctx) -> tuple[int, Any]:
        guild_id = self._check_scope(ctx)
        body = ctx.body or []
        self._check_command_limits(body)
        old = {(c.get("type", 1), c["name"]): c for c in self.commands.scope(guild_id)}
        stored = [
            self._store_command(c, guild_id, old.get((c.get("type") or 1, c["name"]))) for c in body
        ]
        if guild_id is None:
            self.commands.global_commands = stored
        else:
            self.commands.guild_commands[guild_id] = stored
        self.commands.syncs.append((guild_id, [c["name"] for c in stored]))
        return 200, stored

    async def _post_command(self, ctx: _Ctx) -> tuple[int, Any]:
        guild_id = self._check_scope(ctx)
        body = ctx.body or {}
        scope = [
            c
            for c in self.commands.scope(guild_id)
            if (c.get("type", 1), c["name"]) != (body.get("type") or 1, body["name"])
        ]
        old = next(
            (
                c
                for c in self.commands.scope(guild_id)
                if (c.get("type", 1), c["name"]) == (body.get("type") or 1, body["name"])
            ),
            None,
        )
        cmd = self._store_command(body, guild_id, old)
        scope.append(cmd)
        if guild_id is None:
            self.commands.global_commands = scope
        else:
            self.commands.guild_commands[guild_id] = scope
        return (200 if old else 201), cmd

    async def _get_guild(self, ctx: _Ctx) -> tuple[int, Any]:
        gid = int(ctx.params["guild_id"])
        if gid not in self._guilds:
            raise _unknown("Guild", 10004)
        data = self._guild_create_payload(0, gid)
        for key in (
            "members",
            "channels",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
            "large",
            "member_count",
        ):
            data.pop(key, None)
        return 200, data

    async def _get_guild_channels(self, ctx: _Ctx) -> tuple[int, Any]:
        gid = ctx.params["guild_id"]
        if int(gid) not in self._guilds:
            raise _unknown("Guild", 10004)
        return 200, [c for c in self._channels.values() if c.get("guild_id") == gid]

    async def _get_member(self, ctx: _Ctx) -> tuple[int, Any]:
        uid = int(ctx.params["user_id"])
        gid = int(ctx.params["guild_id"])
        if gid not in self._guilds or uid not in self._members:
            raise _unknown("Member", 10007)
        return 200, self._member_payload(uid, gid)

    def _channel(self, ctx: _Ctx) -> int:
        cid = int(ctx.params["channel_id"])
        if cid not in self._channels:
            raise _unknown("Channel", 10003)
        return cid

    async def _get_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._channel_payload(self._channel(ctx))

    async def _typing(self, ctx: _Ctx) -> tuple[int, Any]:
        self._channel(ctx)
        return 204, None

    async def _list_messages(self, ctx: _Ctx) -> tuple[int, Any]:
        cid = self._channel(ctx)
        limit = max(1, min(100, int(ctx.query.get("limit", 50))))
        found = [
            m.data
            for m in self._messages.values()
            if m.channel_id == cid and not m.deleted and not m.ephemeral
        ]
        return 200, list(reversed(found))[:limit]

    async def _post_message(self, ctx: _Ctx) -> tuple[int, Any]:
        cid = self._channel(ctx)
        body = ctx.body or {}
        if spec.is_empty_message(body, has_files=bool(ctx.files)):
            raise ApiError(400, 50006, "Cannot send an empty message")
        reference = None
        ref = body.get("message_reference")
        if ref:
            target = self._messages.get(int(ref["message_id"]))
            if target is None or target.deleted or target.ephemeral:
                if ref.get("fail_if_not_exists", True):
                    raise _form_error(
                        ["message_reference"],
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                    )
            else:
                reference = {"channel_id": target.channel_id, "id": target.data["id"]}
        flags = int(body.get("flags") or 0) & (
            payloads.FLAG_SUPPRESS_EMBEDS | payloads.FLAG_SUPPRESS_NOTIFICATIONS | (1 << 15)
        )
        # Discord: with enforce_nonce, a nonce used by the same author in the channel within the
        # last few minutes returns the message it made instead of a second one.
        enforced = body.get("enforce_nonce") and body.get("nonce") is not None
        nonce_key = (cid, str(body.get("nonce")))
        earlier = self._nonces.get(nonce_key) if enforced else None
        if earlier is not None and time.monotonic() - earlier[1] < NONCE_WINDOW_S:
            return 200, earlier[0].data
        msg_body = {**body, "attachments": self._apply_files(cid, body, ctx.files, [])}
        stored = self._new_message(
            cid, self.bot_user_id, msg_body, reference=reference, flags=flags
        )
        if enforced:
            self._nonces[nonce_key] = (stored, time.monotonic())
        await self._dispatch_message("MESSAGE_CREATE", stored)
        return 200, stored.data

    async def _get_message_route(self, ctx: _Ctx) -> tuple[int, Any]:
        stored = self._get_message(self._channel(ctx), int(ctx.params["message_id"]))
        if stored.ephemeral:
            raise _unknown("Message", 10008)
        return 200, stored.data

    async def _patch_message(self, ctx: _Ctx) -> tuple[int, Any]:
        stored = self._get_message(self._channel(ctx), int(ctx.params["message_id"]))
        if stored.ephemeral:
            raise _unknown("Message", 10008)
        if stored.data["author"]["id"] != str(self.bot_user_id):
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(stored, ctx.body or {}, ctx.files)
        await self._dispatch_message("MESSAGE_UPDATE", stored)
        return 200, stored.data

    async def _delete_message(self, ctx: _Ctx) -> tuple[int, Any]:
        stored = self._get_message(self._channel(ctx), int(ctx.params["message_id"]))
        mine = stored.data["author"]["id"] == str(self.bot_user_id)
        perms = self.permissions_of(self.bot_user_id, self._guild_of(stored.channel_id))
        if not mine and not perms & payloads.MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        await self._delete(stored)
        return 204, None

    async def _delete(self, stored: _Message) -> None:
        stored.deleted = True
        self._changed()
        if not stored.ephemeral:
            data = {"id": stored.data["id"], "channel_id": str(stored.channel_id)}
            gid = self._guild_of(stored.channel_id)
            if gid is not None:
                data["guild_id"] = str(gid)
            await self.gateway.dispatch(
                "MESSAGE_DELETE",
                data,
                intent=DIRECT_MESSAGES if gid is None else GUILD_MESSAGES,
                guild_id=gid,
            )

    @staticmethod
    def _check_emoji(emoji: str) -> None:
        # Custom emojis are name:id (the fake guild has none); unicode emojis are not ASCII.
        if ":" in emoji or not emoji or emoji.isascii():
            raise ApiError(400, 10014, "Unknown Emoji")

    async def _put_reaction(self, ctx: _Ctx) -> tuple[int, Any]:
        stored = self._get_message(self._channel(ctx), int(ctx.params["message_id"]))
        emoji = ctx.params["emoji_name"]
        self._check_emoji(emoji)
        current = self.reactions.current.setdefault(int(stored.data["id"]), [])
        if emoji not in current:
            current.append(emoji)
            self.reactions.log.append(("add", stored.channel_id, int(stored.data["id"]), emoji))
            self._changed()
            await self._dispatch_reaction("MESSAGE_REACTION_ADD", stored, self.bot_user_id, emoji)
        return 204, None

    async def _delete_reaction(self, ctx: _Ctx) -> tuple[int, Any]:
        stored = self._get_message(self._channel(ctx), int(ctx.params["message_id"]))
        emoji = ctx.params["emoji_name"]
        self._check_emoji(emoji)
        current = self.reactions.current.get(int(stored.data["id"]), [])
        if emoji in current:
            current.remove(emoji)
            self.reactions.log.append(("remove", stored.channel_id, int(stored.data["id"]), emoji))
            self._changed()
            await self._dispatch_reaction(
                "MESSAGE_REACTION_REMOVE", stored, self.bot_user_id, emoji
            )
        return 204, None

    # -- interaction callback and webhooks ------------------------------------------------

    async def _callback(self, ctx: _Ctx) -> tuple[int, Any]:
        inter = self._interactions.get(int(ctx.params["interaction_id"]))
        if inter is None:
            raise ApiError(404, 10062, "Unknown interaction")
        if inter.payload["token"] != ctx.params["interaction_token"]:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        if inter.acked:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if asyncio.get_running_loop().time() - inter.created > self.interaction_timeout_s:
            raise ApiError(404, 10062, "Unknown interaction")
        body = ctx.body or {}
        ctype = body.get("type")
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}
        valid = allowed.get(inter.payload["type"], set())
        if inter.component_message_id is None:
            valid = valid - {6, 7}  # (DEFERRED_)UPDATE_MESSAGE: only with a component message
        if ctype not in valid:
            raise _form_error(
                ["type"],
                "INTERACTION_CALLBACK_TYPE_INVALID",
                f"Callback type {ctype} is not valid for interaction type {inter.payload['type']}",
            )
        data = body.get("data") or {}
        if ctype in (4, 7):
            errors = spec.extra_message_errors(data)
            if errors:
                raise ApiError(400, 50035, "Invalid Form Body", {"data": errors})
        if ctype == 9:
            errors = _duplicate_custom_id_errors(data.get("components"))
            if errors:
                raise ApiError(400, 50035, "Invalid Form Body", {"data": errors})
        result = await self._apply_callback(inter, ctype, data, ctx.files)
        ctx.message = self._messages.get(inter.original_id) if inter.original_id else None
        if ctx.query.get("with_response") in ("1", "true", "True"):
            return 200, result
        return 204, None

    async def _apply_callback(
        self, inter: _Interaction, ctype: int, data: dict[str, Any], files: list[_File]
    ) -> dict[str, Any]:
        channel_id = int(inter.payload["channel_id"])
        flags = int(data.get("flags") or 0)
        resource: dict[str, Any] = {"type": ctype}
        stored: _Message | None = None
        # Response message type: 20 CHAT_INPUT_COMMAND, 23 CONTEXT_MENU_COMMAND, 0 otherwise.
        msg_type = 23 if inter.payload["data"].get("type") in (2, 3) else 20
        if inter.payload["type"] != 2:
            msg_type = 0
        if ctype == 4:
            if spec.is_empty_message(data, has_files=bool(files)):
                raise ApiError(400, 50006, "Cannot send an empty message")
            body = {**data, "attachments": self._apply_files(channel_id, data, files, [])}
            stored = self._new_message(
                channel_id,
                self.bot_user_id,
                body,
                flags=flags & _MESSAGE_FLAGS_ALLOWED,
                interaction=inter,
                msg_type=msg_type,
            )
        elif ctype == 5:
            stored = self._new_message(
                channel_id,
                self.bot_user_id,
                {},
                flags=payloads.FLAG_LOADING | (flags & payloads.FLAG_EPHEMERAL),
                interaction=inter,
                msg_type=msg_type,
            )
            inter.followup_edits_original = True
        elif ctype in (6, 7):
            target = self._messages[inter.component_message_id]  # type: ignore[index]
            if target.deleted:
                raise _unknown("Message", 10008)
            inter.original_id = int(target.data["id"])
            if ctype == 7:
                self._edit_message(target, data, files)
                await self._dispatch_message("MESSAGE_UPDATE", target)
            resource["message"] = target.data
        elif ctype == 9:
            modal = json.loads(json.dumps(data))
            _assign_component_ids(modal["components"])
            inter.modal = modal
        inter.acked = True
        inter.callback_type = ctype
        response: dict[str, Any] = {
            "interaction": {"id": inter.payload["id"], "type": inter.payload["type"]},
            "resource": resource,
        }
        if stored is not None:
            inter.original_id = int(stored.data["id"])
            inter.message_ids.append(inter.original_id)
            resource["message"] = stored.data
            response["interaction"].update(
                {
                    "response_message_id": stored.data["id"],
                    "response_message_loading": ctype == 5,
                    "response_message_ephemeral": stored.ephemeral,
                }
            )
            await self._dispatch_message("MESSAGE_CREATE", stored)
        return response

    def _original(self, inter: _Interaction) -> _Message:
        stored = self._messages.get(inter.original_id) if inter.original_id else None
        if stored is None or stored.deleted:
            raise _unknown("Message", 10008)
        return stored

    def _webhook_interaction(self, ctx: _Ctx) -> _Interaction:
        return self._interaction_for_webhook(ctx.params["webhook_id"], ctx.params["webhook_token"])

    async def _get_original(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._original(self._webhook_interaction(ctx)).data

    async def _edit_interaction_message(
        self, inter: _Interaction, stored: _Message, ctx: _Ctx
    ) -> tuple[int, Any]:
        ctx.message = stored
        self._edit_message(stored, ctx.body or {}, ctx.files)
        if int(stored.data["id"]) == inter.original_id:
            inter.followup_edits_original = False
        await self._dispatch_message("MESSAGE_UPDATE", stored)
        return 200, stored.data

    async def _patch_original(self, ctx: _Ctx) -> tuple[int, Any]:
        inter = self._webhook_interaction(ctx)
        return await self._edit_interaction_message(inter, self._original(inter), ctx)

    async def _delete_original(self, ctx: _Ctx) -> tuple[int, Any]:
        ctx.message = self._original(self._webhook_interaction(ctx))
        await self._delete(ctx.message)
        return 204, None

    async def _followup(self, ctx: _Ctx) -> tuple[int, Any]:
        inter = self._webhook_interaction(ctx)
        body = ctx.body or {}
        if spec.is_empty_message(body, has_files=bool(ctx.files)):
            raise ApiError(400, 50006, "Cannot send an empty message")
        if inter.followup_edits_original:
            # Discord: the first followup after a deferral replaces the "thinking" message
            # (keeping the deferral's ephemerality, whatever the followup's flags say).
            stored = self._original(inter)
            self._edit_message(stored, {"content": None, **body, "flags": None}, ctx.files)
            inter.followup_edits_original = False
            await self._dispatch_message("MESSAGE_UPDATE", stored)
        else:
            channel_id = int(inter.payload["channel_id"])
            msg_body = {**body, "attachments": self._apply_files(channel_id, body, ctx.files, [])}
            stored = self._new_message(
                channel_id,
                self.bot_user_id,
                msg_body,
                flags=int(body.get("flags") or 0) & _MESSAGE_FLAGS_ALLOWED,
                interaction=inter,
                msg_type=0,
            )
            inter.message_ids.append(int(stored.data["id"]))
            await self._dispatch_message("MESSAGE_CREATE", stored)
        ctx.message = stored
        if ctx.query.get("wait") in ("1", "true", "True"):
            return 200, stored.data
        return 204, None

    def _followup_message(self, ctx: _Ctx) -> tuple[_Interaction, _Message]:
        inter = self._webhook_interaction(ctx)
        message_id = int(ctx.params["message_id"])
        stored = self._messages.get(message_id)
        if message_id not in inter.message_ids or stored is None or stored.deleted:
            raise _unknown("Message", 10008)
        return inter, stored

    async def _get_followup(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._followup_message(ctx)[1].data

    async def _patch_followup(self, ctx: _Ctx) -> tuple[int, Any]:
        inter, stored = self._followup_message(ctx)
        return await self._edit_interaction_message(inter, stored, ctx)

    async def _delete_followup(self, ctx: _Ctx) -> tuple[int, Any]:
        ctx.message = self._followup_message(ctx)[1]
        await self._delete(ctx.message)
        return 204, None
