"""A local, protocol-faithful fake Discord (REST + gateway + CDN) for driving a real
discord.py client in tests. Everything binds to 127.0.0.1; nothing reaches the internet.

What a discord.py 2.7 client must override to talk to the fake
----------------------------------------------------------------
discord.py hard-codes Discord's hosts in two places that matter:

1. ``discord.http.Route.BASE`` (``"https://discord.com/api/v10"``) — every REST call,
   *including* interaction callbacks, followups and ``@original`` edits (the webhook
   adapter in ``discord/webhook/async_.py`` builds its URLs with ``Route`` too).
   Set it to ``fake.api_base``. ``Route`` reads it when a route is built, so set it before
   the client starts and restore it afterwards.
2. ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (``wss://gateway.discord.gg/``) — a
   plain ``Client`` / ``commands.Bot`` connects there directly and never calls
   ``GET /gateway/bot`` (only ``AutoShardedClient`` does). Set it to
   ``yarl.URL(fake.gateway_url)``. After READY the client uses the ``resume_gateway_url``
   the fake sent (``.../gateway/resume``) for RESUME, as with real Discord. An
   ``AutoShardedClient`` without ``shard_count`` takes the URL (and the count) from
   ``GET /gateway/bot``, which the fake answers with its own gateway.

Nothing else needs changing: attachment URLs come from the fake's payloads (its CDN),
``Asset.BASE`` (avatars) is only used if the bot downloads avatars, and the ``discord.com``
links in ``Message.jump_url`` / ``Webhook.url`` are strings, never requested.

:func:`point_discord_py_at` applies (and restores) both overrides; :func:`running` also logs
a client in, waits for ``on_ready`` and closes it afterwards. Pass
``guild_ready_timeout`` small (``running`` does) or discord.py waits 2 s before READY.

Import it as ``fake_discord`` (``tests/`` is on ``sys.path`` under pytest, as for
``conftest.py``); importing it also as ``tests.fake_discord`` would load a second copy.

Waiting
-------
``await fake.wait_for(lambda f: ..., timeout=...)`` re-checks the predicate whenever the
fake's state changes (a request, a message, a heartbeat...). If the predicate also reads
state outside the fake (e.g. a list an ``on_message`` handler fills), call ``fake.notify()``
where that state changes, or it is only re-checked at the next fake event.

Fidelity (what the fake enforces, like Discord)
-----------------------------------------------
* REST: ``Authorization: Bot <token>`` (401 otherwise; interaction/webhook routes need none),
  unknown routes → 404 ``{"message": "404: Not Found", "code": 0}`` (recorded:
  ``fake.unknown_requests``), JSON bodies and multipart ``payload_json`` validated against
  the official OpenAPI spec → 400 / 50035 with Discord-shaped ``errors``
  (``fake.invalid_requests``), plus the 6,000-character embed total, the 2,000-character
  bot content limit, empty messages (50006) and the upload limit (413 / 40005).
* Interactions: callback once (40060 after), within ``interaction_timeout_s`` (10062 after);
  the token works for ``@original`` and followups only after a callback (10015 before);
  after a deferral the first followup edits the "thinking" message, as Discord does.
* Gateway: intents filter events; without MESSAGE_CONTENT, message content fields are blanked
  (except DMs, mentions of the bot and its own messages); zlib-stream transport compression;
  RESUME replays missed dispatches; IDENTIFY with a bad token → close 4004, disallowed
  privileged intents → 4014.
* Shards and guilds: :meth:`FakeDiscord.add_guild` adds guilds (on a chosen shard, by
  Discord's ``(guild_id >> 22) % num_shards``); each IDENTIFY's ``shard`` opens its own session,
  whose READY and GUILD_CREATEs cover only its guilds; guild events go to the owning shard
  only, DMs to shard 0; an invalid shard → 4010, too many guilds on one shard → 4011;
  ``drop_connection`` / ``request_reconnect`` take a ``shard_id``. ``GET /gateway/bot``
  recommends one shard per 1,000 guilds (or ``recommended_shards``).
* Commands can only be invoked once synced (``require_synced``), with the synced option types,
  and ``default_member_permissions`` hide them from members lacking those permissions.
* Components: ``click_button`` / ``choose_select`` only act on components the message shows
  (enabled, an existing custom id, select values among its options and within
  ``min_values``/``max_values``; an ephemeral message only for its user), as the Discord
  client does; ``check=False`` sends a forged or stale custom id on purpose.
* Modals: a MODAL (9) answer is validated like any body (50035, also for duplicate custom
  ids) and kept (``modal_of``); ``submit_modal`` checks required inputs and lengths, then
  sends MODAL_SUBMIT (type 5) shaped like the modal's layout (action rows or Labels), with
  the component's ``message`` when a component opened it; UPDATE_MESSAGE (7) and
  DEFERRED_UPDATE_MESSAGE (6) are refused where there is no such message.

Main API: :class:`FakeDiscord` (see its methods), fixture ``fake_discord`` in
:mod:`fake_discord.fixtures`, CDN handler factories in :mod:`fake_discord.cdn`.
"""

from . import cdn
from .client import point_discord_py_at, running
from .gateway import MESSAGE_CONTENT, PRIVILEGED_INTENTS
from .server import ApiError, CommandBook, FakeDiscord, ReactionBook, RequestRecord
from .spec import SpecUnavailable

__all__ = [
    "MESSAGE_CONTENT",
    "PRIVILEGED_INTENTS",
    "ApiError",
    "CommandBook",
    "FakeDiscord",
    "ReactionBook",
    "RequestRecord",
    "SpecUnavailable",
    "cdn",
    "point_discord_py_at",
    "running",
]
