"""Tests of the fake Discord itself, driven by bare discord.py clients (not genre-bot)."""

from __future__ import annotations

import asyncio
import io
import json
import zlib
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from fake_discord import FakeDiscord, cdn, running
from fake_discord.spec import SPEC_PATH, schema_errors

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.is_file(), reason=f"Discord OpenAPI spec absent ({SPEC_PATH})"
)


def make_client(*, message_content: bool = False) -> discord.Client:
    intents = discord.Intents.default()
    intents.message_content = message_content
    return discord.Client(intents=intents)


async def raw(
    fake: FakeDiscord, method: str, path: str, *, auth: bool = True, **kw: Any
) -> tuple[int, Any]:
    """A REST call straight to the fake (no discord.py in between)."""
    headers = {"Authorization": f"Bot {fake.token}"} if auth else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, fake.api_base + path, headers=headers, **kw) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


# ---------------------------------------------------------------------------------------
# gateway
# ---------------------------------------------------------------------------------------


async def test_connect_ready_and_guild_create(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice", admin=True)
    client = make_client()
    async with running(client, fake):
        assert client.user is not None and client.user.id == fake.bot_user_id
        assert client.application_id == fake.application_id
        guild = client.get_guild(fake.guild_id)
        assert guild is not None and not guild.unavailable
        assert client.get_channel(fake.channel_id) is not None
        # Without the GUILD_MEMBERS intent only the bot's own member arrives, as on Discord.
        assert guild.me is not None and guild.me.id == fake.bot_user_id
        assert guild.get_member(alice) is None
        assert fake.identify_intents == client.intents.value
        first = fake.gateway.connections[0]
        assert first["query"] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
        await fake.wait_for(lambda f: len(f.heartbeats) >= 2, timeout=5)
    assert fake.unknown_requests == []


async def test_members_intent_delivers_members_with_permissions(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    alice = fake.add_user("alice", admin=True)
    bob = fake.add_user("bob")
    intents = discord.Intents.default()
    intents.members = True
    client = discord.Client(intents=intents)
    async with running(client, fake):
        guild = client.get_guild(fake.guild_id)
        assert guild is not None
        assert guild.get_member(alice).guild_permissions.administrator
        assert not guild.get_member(bob).guild_permissions.administrator


async def test_disallowed_privileged_intent_is_refused() -> None:
    fake = FakeDiscord(privileged_intents=0)
    await fake.start()
    try:
        client = make_client(message_content=True)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running(client, fake, timeout=5):
                pass
    finally:
        await fake.stop()


async def test_bad_token_is_refused(fake_discord: FakeDiscord) -> None:
    client = make_client()
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert fake_discord.requests[-1].status == 401


@pytest.mark.parametrize("how", ["abort", "close 4000", "op 7 RECONNECT"])
async def test_resume_after_drop_replays_missed_events(fake_discord: FakeDiscord, how: str) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    client = make_client(message_content=True)
    seen: list[str] = []
    resumed = asyncio.Event()
    client.event(_named("on_message", lambda m: seen.append(m.content), fake))
    client.event(_named("on_resumed", resumed.set, fake))
    async with running(client, fake):
        await fake.send_message(alice, "before")
        await fake.wait_for(lambda f: seen == ["before"], timeout=5)
        if how == "op 7 RECONNECT":
            await fake.request_reconnect()
            # discord.py closes and resumes by itself; hold the event until it has closed.
            await fake.wait_for(lambda f: not f.connected, timeout=5)
        else:
            await fake.drop_connection(None if how == "abort" else 4000)
        # Sent while the bot is disconnected: must arrive through the RESUME replay.
        await fake.send_message(alice, "while away")
        await asyncio.wait_for(resumed.wait(), 15)
        await fake.wait_for(lambda f: seen == ["before", "while away"], timeout=5)
        assert fake.resumes == 1
        last = fake.gateway.connections[-1]
        assert last["op"] == "RESUME" and last["path"] == "/gateway/resume"
        assert sum(c["op"] == "IDENTIFY" for c in fake.gateway.connections) == 1
        # The session is still fully usable afterwards.
        await fake.send_message(alice, "after")
        await fake.wait_for(lambda f: seen[-1:] == ["after"], timeout=5)


def _named(name: str, fn: Any, fake: FakeDiscord) -> Any:
    """Wrap a plain callable as a coroutine event handler called ``name``.

    It pokes ``fake.notify()`` so that ``fake.wait_for`` predicates reading the handler's
    results are re-checked at once.
    """

    async def handler(*args: Any) -> None:
        fn(*args)
        fake.notify()

    handler.__name__ = name
    return handler


async def test_zlib_stream_frames_are_complete_sync_flushed_messages(
    fake_discord: FakeDiscord,
) -> None:
    """Speak to the gateway by hand: zlib-stream frames end in Z_SYNC_FLUSH; READY arrives."""
    fake = fake_discord
    url = fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream"
    inflate = zlib.decompressobj()
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        frame = await ws.receive_bytes(timeout=5)
        assert frame.endswith(b"\x00\x00\xff\xff")
        hello = json.loads(inflate.decompress(frame))
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 1000
        identify = {"op": 2, "d": {"token": fake.token, "intents": 1, "properties": {}}}
        await ws.send_str(json.dumps(identify))
        ready = json.loads(inflate.decompress(await ws.receive_bytes(timeout=5)))
        assert ready["t"] == "READY" and ready["s"] == 1
        assert ready["d"]["resume_gateway_url"] == fake.resume_gateway_url
        guild = json.loads(inflate.decompress(await ws.receive_bytes(timeout=5)))
        assert guild["t"] == "GUILD_CREATE" and guild["s"] == 2


# ---------------------------------------------------------------------------------------
# sharding and several guilds
# ---------------------------------------------------------------------------------------


def _on(shard_id: int, count: int, guild_ids: list[int]) -> list[int]:
    return [g for g in guild_ids if (g >> 22) % count == shard_id]


async def test_sharded_client_gets_each_guild_and_its_events_on_its_shard_only(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    g0 = fake.add_guild("zero", shard=(0, 2))
    g1 = fake.add_guild("one", shard=(1, 2))
    assert (g0 >> 22) % 2 == 0 and (g1 >> 22) % 2 == 1
    alice = fake.add_user("alice")
    intents = discord.Intents.default()
    intents.message_content = True
    client = discord.AutoShardedClient(intents=intents, shard_count=2)
    seen: list[str] = []
    client.event(_named("on_message", lambda m: seen.append(m.content), fake))
    async with running(client, fake):
        assert sorted(client.shards) == [0, 1]
        identified = sorted(c["shard"] for c in fake.gateway.connections if c["op"] == "IDENTIFY")
        assert identified == [[0, 2], [1, 2]]
        for gid in fake.guild_ids:
            guild = client.get_guild(gid)
            assert guild is not None and not guild.unavailable
            assert guild.shard_id == (gid >> 22) % 2
        for shard_id in (0, 1):
            events = fake.gateway.session_of(shard_id).events
            assert events[0]["d"]["shard"] == [shard_id, 2]
            assert [int(g["id"]) for g in events[0]["d"]["guilds"]] == _on(
                shard_id, 2, fake.guild_ids
            )
            created = [int(e["d"]["id"]) for e in events if e["t"] == "GUILD_CREATE"]
            assert created == _on(shard_id, 2, fake.guild_ids)
        await fake.send_message(alice, "zero", guild_id=g0)
        await fake.send_message(alice, "one", guild_id=g1)
        await fake.send_message(alice, "private", dm=True)
        await fake.wait_for(lambda f: len(seen) == 3, timeout=5)
        got = {
            shard_id: [
                e["d"]["content"]
                for e in fake.gateway.session_of(shard_id).events
                if e["t"] == "MESSAGE_CREATE"
            ]
            for shard_id in (0, 1)
        }
        # Guild messages on the guild's shard, the DM on shard 0; each exactly once.
        assert got == {0: ["zero", "private"], 1: ["one"]}
        # A guild joined later arrives on its shard (GUILD_CREATE), and REST knows it.
        joined = asyncio.Event()
        client.event(_named("on_guild_join", lambda g: joined.set(), fake))
        g3 = fake.add_guild("later", shard=(1, 2))
        await asyncio.wait_for(joined.wait(), 5)
        assert client.get_guild(g3) is not None and client.get_guild(g3).shard_id == 1
        channel = client.get_channel(fake.channel_of(g3))
        assert channel is not None and channel.guild.id == g3
        assert (await client.fetch_guild(g3)).name == "later"
        assert [c.id for c in await client.get_guild(g3).fetch_channels()] == [fake.channel_of(g3)]
    assert sorted(seen) == ["one", "private", "zero"]
    assert fake.unknown_requests == [] and fake.invalid_requests == []


async def test_gateway_bot_recommends_the_shard_count_the_client_then_runs(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    status, body = await raw(fake, "GET", "/gateway/bot")
    assert status == 200 and body["shards"] == 1 and body["url"] == fake.gateway_url
    # The answer has the shape Discord's OpenAPI spec gives it.
    spec = json.loads(SPEC_PATH.read_text())
    schema = spec["paths"]["/gateway/bot"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator({"components": spec["components"], **schema})
    assert list(validator.iter_errors(body)) == []

    fake.recommended_shards = 3
    client = discord.AutoShardedClient(intents=discord.Intents.default())  # no shard_count
    async with running(client, fake):
        assert client.shard_count == 3 and sorted(client.shards) == [0, 1, 2]
        assert sorted(s.shard for s in fake.gateway.sessions.values()) == [(0, 3), (1, 3), (2, 3)]
        # Each shard resumes on its own: drop shard 2, the others keep their connections.
        before = {s: fake.gateway.session_of(s).connection for s in (0, 1)}
        await fake.drop_connection(4000, shard_id=2)
        await fake.wait_for(lambda f: f.resumes == 1 and f.connected, timeout=10)
        assert {s: fake.gateway.session_of(s).connection for s in (0, 1)} == before


async def test_a_shard_run_twice_gets_its_events_twice(fake_discord: FakeDiscord) -> None:
    """Discord does not stop two processes identifying as the same shard: both get its events
    (so a fleet must run each shard once). The fake does the same."""
    fake = fake_discord
    alice = fake.add_user("alice")
    seen: list[str] = []
    first, second = make_client(), make_client()
    for name, client in (("first", first), ("second", second)):
        client.event(_named("on_message", lambda m, n=name: seen.append(n), fake))
    async with running(first, fake), running(second, fake):
        assert len(fake.gateway.sessions) == 2 and fake.connected
        await fake.send_message(alice, "hello")
        await fake.wait_for(lambda f: len(seen) == 2, timeout=5)
    assert sorted(seen) == ["first", "second"]


async def _identify_raw(fake: FakeDiscord, d: dict[str, Any]) -> int | str:
    """IDENTIFY by hand; the close code, or the first dispatch's event name."""
    url = fake.gateway_url + "?v=10&encoding=json"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive_json(timeout=5)  # HELLO
        payload = {"token": fake.token, "intents": 1, "properties": {}, **d}
        await ws.send_str(json.dumps({"op": 2, "d": payload}))
        msg = await ws.receive(timeout=5)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(json.loads(msg.data)["t"])
        assert ws.close_code is not None
        return ws.close_code


@pytest.mark.parametrize("shard", [[2, 2], [0, 0], [-1, 2], [0], "0,1", [0, True], None])
async def test_identify_with_an_invalid_shard_is_closed_4010(
    fake_discord: FakeDiscord, shard: Any
) -> None:
    assert await _identify_raw(fake_discord, {"shard": shard}) == 4010
    assert fake_discord.gateway.sessions == {}


async def test_too_many_guilds_on_a_shard_is_closed_4011() -> None:
    fake = FakeDiscord(max_guilds_per_shard=1)
    await fake.start()
    try:
        fake.add_guild("zero", shard=(0, 2))
        fake.add_guild("one", shard=(1, 2))
        # Three guilds on one shard: "Sharding required"; split over enough shards: accepted.
        assert await _identify_raw(fake, {}) == 4011
        counts = [len(_on(i, 2, fake.guild_ids)) for i in (0, 1)]
        crowded = counts.index(max(counts))
        assert await _identify_raw(fake, {"shard": [crowded, 2]}) == 4011
        assert await _identify_raw(fake, {"shard": [0, 3 * 2**22]}) == "READY"
    finally:
        await fake.stop()


# ---------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("intent", [False, True])
async def test_message_content_depends_on_intent(fake_discord: FakeDiscord, intent: bool) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    client = make_client(message_content=intent)
    got: list[discord.Message] = []
    client.event(_named("on_message", got.append, fake))
    song = fake.add_attachment(b"ID3" + b"\0" * 100, "song.mp3", "audio/mpeg")
    async with running(client, fake):
        await fake.send_message(alice, "what genre?", attachments=[song])
        await fake.send_message(alice, f"{fake.mention(fake.bot_user_id)} this one")
        await fake.send_message(alice, "in private", dm=True)
        await fake.wait_for(lambda f: len(got) == 3, timeout=5)
    plain, mention, dm = got
    if intent:
        assert plain.content == "what genre?"
        assert [a.filename for a in plain.attachments] == ["song.mp3"]
    else:
        assert plain.content == "" and plain.attachments == []
    # Exempt from the intent: messages mentioning the bot, and DMs.
    assert mention.content.endswith("this one") and client.user in mention.mentions
    assert dm.content == "in private" and isinstance(dm.channel, discord.DMChannel)


async def test_reply_with_embed_and_file_is_recorded(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    client = make_client(message_content=True)

    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        embed = discord.Embed(title="Genre: rock", description="confident")
        embed.add_field(name="metal", value="12%")
        reply = await message.reply(embed=embed, file=discord.File(io.BytesIO(b"png"), "chart.png"))
        await reply.add_reaction("🎸")

    client.event(on_message)
    async with running(client, fake):
        original = await fake.send_message(alice, "classify me")
        await fake.wait_for(lambda f: f.reactions.log, timeout=5)
    [reply] = fake.messages()
    assert reply["embeds"][0]["title"] == "Genre: rock"
    assert reply["embeds"][0]["fields"] == [{"name": "metal", "value": "12%", "inline": True}]
    assert reply["message_reference"]["message_id"] == original["id"]
    assert reply["attachments"][0]["filename"] == "chart.png"
    assert fake.reactions.on(reply["id"]) == ["🎸"]
    # Files the bot uploads are served by the fake CDN.
    async with (
        aiohttp.ClientSession() as session,
        session.get(reply["attachments"][0]["url"]) as resp,
    ):
        assert await resp.read() == b"png"
        assert resp.content_type == "image/png"
    assert fake.unknown_requests == [] and fake.invalid_requests == []


def _bad_embed(case: str) -> discord.Embed:
    if case == "title>256":
        return discord.Embed(title="x" * 257)
    embed = discord.Embed(title="t" * 256, description="d" * 4096)
    if case == "30 fields":
        embed = discord.Embed(title="many")
        for i in range(30):
            embed.add_field(name=f"f{i}", value="v")
    else:  # every part within its own limit, but 6,352 characters in total
        for i in range(2):
            embed.add_field(name=f"f{i}", value="v" * 1000)
    return embed


@pytest.mark.parametrize(
    ("case", "error_path", "code"),
    [
        ("title>256", ["embeds", "0", "title"], "BASE_TYPE_MAX_LENGTH"),
        ("30 fields", ["embeds", "0", "fields"], "BASE_TYPE_MAX_LENGTH"),
        ("total>6000", ["embeds"], "MAX_EMBED_SIZE_EXCEEDED"),
    ],
)
async def test_invalid_embed_is_refused_with_50035(
    fake_discord: FakeDiscord, case: str, error_path: list[str], code: str
) -> None:
    fake = fake_discord
    client = make_client()
    async with running(client, fake):
        channel = client.get_channel(fake.channel_id)
        with pytest.raises(discord.HTTPException) as excinfo:
            await channel.send(embed=_bad_embed(case))
    assert excinfo.value.status == 400 and excinfo.value.code == 50035
    [refused] = fake.invalid_requests
    node = refused.errors
    for part in error_path:
        node = node[part]
    assert [e["code"] for e in node["_errors"]] == [code]
    assert fake.messages() == []


async def test_empty_and_overlong_messages_are_refused(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    status, body = await raw(fake, "POST", f"/channels/{fake.channel_id}/messages", json={})
    assert (status, body["code"]) == (400, 50006)
    status, body = await raw(
        fake, "POST", f"/channels/{fake.channel_id}/messages", json={"content": "x" * 2001}
    )
    assert (status, body["code"]) == (400, 50035)
    assert "content" in body["errors"]
    # Snowflakes as integers are accepted, as by Discord.
    status, body = await raw(
        fake,
        "POST",
        f"/channels/{fake.channel_id}/messages",
        json={"content": "ok", "allowed_mentions": {"users": [fake.bot_user_id]}},
    )
    assert status == 200 and body["content"] == "ok"


async def test_edit_and_delete_messages(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    theirs = await fake.send_message(alice, "not yours")
    client = make_client()
    async with running(client, fake):
        channel = client.get_channel(fake.channel_id)
        mine = await channel.send("draft")
        await mine.edit(content="final", embed=discord.Embed(title="rock"))
        with pytest.raises(discord.HTTPException) as excinfo:
            await mine.edit(content="", embeds=[])  # would leave nothing to show
        assert excinfo.value.code == 50006
        other = await channel.fetch_message(int(theirs["id"]))
        with pytest.raises(discord.Forbidden) as forbidden:
            await other.edit(content="hijacked")
        assert forbidden.value.code == 50005
        gone = await channel.send("temporary")
        await gone.delete()
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(gone.id)
    [current] = fake.messages()
    assert current["content"] == "final" and current["embeds"][0]["title"] == "rock"
    assert current["edited_timestamp"] is not None
    assert fake.message(gone.id)["deleted"]
    assert fake.message(theirs["id"])["content"] == "not yours"


async def test_unknown_route_and_missing_auth(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    status, body = await raw(fake, "GET", "/channels/1/pins/nothing")
    assert status == 404 and body == {"message": "404: Not Found", "code": 0}
    status, body = await raw(fake, "GET", "/users/@me", auth=False)
    assert status == 401
    status, body = await raw(fake, "GET", f"/channels/{fake.channel_id + 1}")
    assert (status, body["code"]) == (404, 10003)
    assert [r.path for r in fake.unknown_requests] == ["/channels/1/pins/nothing"]


async def test_unicode_emoji_only(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    client = make_client()
    async with running(client, fake):
        message = await client.get_channel(fake.channel_id).send("hi")
        with pytest.raises(discord.HTTPException) as excinfo:
            await message.add_reaction(":thumbsup:")  # not how the API spells emojis
        assert excinfo.value.code == 10014
        await message.add_reaction("✅")
        await message.remove_reaction("✅", client.user)
    assert fake.reactions.on(message.id) == []
    assert [entry[0] for entry in fake.reactions.log] == ["add", "remove"]


# ---------------------------------------------------------------------------------------
# rate limits and failures
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("global_", [False, True])
async def test_429_is_retried_by_discord_py(fake_discord: FakeDiscord, global_: bool) -> None:
    fake = fake_discord
    client = make_client()
    async with running(client, fake):
        fake.rate_limit("POST", r"/channels/\d+/messages", retry_after=0.3, global_=global_)
        message = await client.get_channel(fake.channel_id).send("after the limit")
    attempts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/messages")]
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 0.25  # discord.py honoured retry_after
    assert [m["id"] for m in fake.messages()] == [str(message.id)]


async def test_injected_5xx_is_retried_then_surfaces(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    client = make_client()
    async with running(client, fake):
        fake.fail("POST", r"/channels/\d+/messages", status=500, count=1)
        await client.get_channel(fake.channel_id).send("retried once")
        fake.fail("POST", r"/channels/\d+/messages", status=503, count=1)
        with pytest.raises(discord.DiscordServerError):
            await client.get_channel(fake.channel_id).send("503 is not retried")
    assert [m["content"] for m in fake.messages()] == ["retried once"]


async def test_an_enforced_nonce_makes_one_message_however_often_it_is_sent(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    client = make_client()
    async with running(client, fake):
        channel = client.get_channel(fake.channel_id)
        fake.fail("POST", r"/channels/\d+/messages", status=503, after_handling=True)
        with pytest.raises(discord.DiscordServerError):
            await channel.send("stored, answer lost", nonce="n-1")
        again = await channel.send("stored, answer lost", nonce="n-1")
        other = await channel.send("a new message", nonce="n-2")
    assert [m["content"] for m in fake.messages()] == ["stored, answer lost", "a new message"]
    assert [str(again.id), str(other.id)] == [m["id"] for m in fake.messages()]


# ---------------------------------------------------------------------------------------
# application commands and interactions
# ---------------------------------------------------------------------------------------


def make_bot() -> commands.Bot:
    return commands.Bot(command_prefix="!", intents=discord.Intents.default())


async def test_command_sync_is_recorded_and_invocable(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    admin = fake.add_user("root", admin=True)
    bot = make_bot()
    calls: list[tuple[str, Any]] = []

    @bot.tree.command(name="genre", description="Name the genre of a song")
    @app_commands.describe(file="The song")
    async def genre(interaction: discord.Interaction, file: discord.Attachment) -> None:
        calls.append(("genre", file.filename))
        await interaction.response.send_message(f"got {file.filename}")

    @bot.tree.context_menu(name="Classify genre")
    async def classify(interaction: discord.Interaction, message: discord.Message) -> None:
        calls.append(("menu", message.content))
        await interaction.response.send_message("menu ok", ephemeral=True)

    @bot.tree.command(name="retrain", description="Admins only")
    @app_commands.default_permissions(administrator=True)
    async def retrain(interaction: discord.Interaction) -> None:
        calls.append(("retrain", interaction.user.id))
        await interaction.response.send_message("retraining", ephemeral=True)

    async with running(bot, fake):
        with pytest.raises(LookupError):  # not synced yet: Discord would not offer it
            await fake.invoke_slash(alice, "genre")
        synced = await bot.tree.sync()
        assert {c.name for c in synced} == {"genre", "Classify genre", "retrain"}
        [(scope, names)] = fake.commands.syncs
        assert scope is None and sorted(names) == ["Classify genre", "genre", "retrain"]
        assert fake.commands.find("Classify genre", type=3) is not None
        fetched = await bot.tree.fetch_commands()
        assert sorted(c.name for c in fetched) == sorted(c.name for c in synced)
        await bot.tree.sync(guild=discord.Object(fake.guild_id))
        assert fake.commands.syncs[-1] == (fake.guild_id, [])

        song = fake.add_attachment(b"\0" * 10, "a.mp3", "audio/mpeg")
        inter = await fake.invoke_slash(alice, "genre", attachments={"file": song})
        await fake.wait_for(lambda f: f.interaction_responses(inter["id"]), timeout=5)
        # Message commands carry the full message even without MESSAGE_CONTENT.
        target = await fake.send_message(alice, "secret text")
        menu = await fake.invoke_message_command(alice, "Classify genre", target)
        await fake.wait_for(lambda f: f.interaction_responses(menu["id"]), timeout=5)
        with pytest.raises(PermissionError):
            await fake.invoke_slash(alice, "retrain")
        admin_inter = await fake.invoke_slash(admin, "retrain")
        await fake.wait_for(lambda f: f.interaction_responses(admin_inter["id"]), timeout=5)

    assert calls == [("genre", "a.mp3"), ("menu", "secret text"), ("retrain", admin)]
    [response] = fake.interaction_responses(inter["id"])
    assert response["kind"] == "callback" and response["type"] == 4
    assert response["message"]["content"] == "got a.mp3" and not response["ephemeral"]
    assert fake.messages()[-1]["interaction_metadata"]["id"] == inter["id"]
    [menu_response] = fake.interaction_responses(menu["id"])
    assert menu_response["ephemeral"] and menu_response["flags"] == 64
    assert all(m["content"] != "menu ok" for m in fake.messages())  # ephemeral: not in channel


async def test_interaction_callback_is_single_use(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    bot = make_bot()
    second: list[BaseException] = []

    @bot.tree.command(name="ping", description="Ping")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")
        # discord.py itself refuses a second response; go around it to ask the API.
        adapter = discord.webhook.async_.async_context.get()
        params = discord.webhook.async_.interaction_message_response_params(type=4, content="again")
        try:
            await adapter.create_interaction_response(
                interaction.id,
                interaction.token,
                session=interaction._session,
                proxy=None,
                proxy_auth=None,
                params=params,
            )
        except discord.HTTPException as exc:
            second.append(exc)

    async with running(bot, fake):
        await bot.tree.sync()
        inter = await fake.invoke_slash(alice, "ping")
        await fake.wait_for(lambda f: len(f.interaction_responses(inter["id"])) == 2, timeout=5)
    [exc] = second
    assert isinstance(exc, discord.HTTPException) and exc.code == 40060
    first, again = fake.interaction_responses(inter["id"])
    assert (first["status"], again["status"], again["code"]) == (200, 400, 40060)
    assert [m["content"] for m in fake.messages()] == ["pong"]


async def test_late_callback_expires_but_token_works_after_ack(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    fake.interaction_timeout_s = 0.2  # Discord's 3 s, shrunk to keep the test fast
    alice = fake.add_user("alice")
    bot = make_bot()
    outcome: list[Any] = []

    @bot.tree.command(name="slow", description="Too slow")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.4)
        try:
            await interaction.response.send_message("late")
        except discord.NotFound as exc:
            outcome.append(exc.code)
            fake.notify()

    @bot.tree.command(name="deferred", description="Defers, then follows up")
    async def deferred(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await asyncio.sleep(0.4)  # past the callback window: the token must still work
        # The first followup replaces the "thinking" message and inherits its ephemerality.
        await interaction.followup.send(embed=discord.Embed(title="rock"))
        await interaction.edit_original_response(content="edited")
        extra = await interaction.followup.send("second", ephemeral=False, wait=True)
        outcome.append(extra.id)
        fake.notify()

    async with running(bot, fake):
        await bot.tree.sync()
        late = await fake.invoke_slash(alice, "slow")
        ok = await fake.invoke_slash(alice, "deferred")
        await fake.wait_for(lambda f: len(outcome) == 2, timeout=10)
    assert 10062 in outcome
    [expired] = fake.interaction_responses(late["id"])
    assert (expired["status"], expired["code"]) == (404, 10062)
    kinds = [(r["kind"], r["status"], r["ephemeral"]) for r in fake.interaction_responses(ok["id"])]
    assert kinds == [
        ("callback", 200, True),
        ("followup", 200, True),
        ("edit_original", 200, True),
        ("followup", 200, False),
    ]
    responses = fake.interaction_responses(ok["id"])
    assert responses[1]["message_id"] == responses[0]["message_id"]  # edited the original
    assert responses[2]["message"]["content"] == "edited"
    assert responses[2]["message"]["embeds"][0]["title"] == "rock"
    assert [m["content"] for m in fake.messages()] == ["second"]


async def test_invalid_followup_is_refused(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    bot = make_bot()
    errors: list[discord.HTTPException] = []

    @bot.tree.command(name="bad", description="Sends a bad embed")
    async def bad(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        try:
            await interaction.followup.send(embed=discord.Embed(title="t" * 300))
        except discord.HTTPException as exc:
            errors.append(exc)

    async with running(bot, fake):
        await bot.tree.sync()
        inter = await fake.invoke_slash(alice, "bad")
        await fake.wait_for(lambda f: len(f.interaction_responses(inter["id"])) == 2, timeout=5)
    assert [e.code for e in errors] == [50035]
    followup = fake.interaction_responses(inter["id"])[1]
    assert followup["kind"] == "followup" and followup["status"] == 400
    assert "title" in followup["errors"]["embeds"]["0"]


async def test_interaction_webhook_429_is_retried(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    bot = make_bot()

    @bot.tree.command(name="hi", description="Hi")
    async def hi(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.followup.send("hello")

    async with running(bot, fake):
        await bot.tree.sync()
        fake.rate_limit("POST", r"/webhooks/\d+/[^/]+", retry_after=0.2)
        inter = await fake.invoke_slash(alice, "hi")
        await fake.wait_for(
            lambda f: (
                [r["status"] for r in f.interaction_responses(inter["id"])] == [200, 429, 200]
            ),
            timeout=5,
        )
    statuses = [r.status for r in fake.requests if r.path.startswith("/webhooks/")]
    assert statuses == [429, 200]
    assert fake.interaction_responses(inter["id"])[1]["kind"] == "followup"
    assert fake.messages()[-1]["content"] == "hello"


# ---------------------------------------------------------------------------------------
# message components and modals
# ---------------------------------------------------------------------------------------


GENRES = [discord.SelectOption(label=g.title(), value=g) for g in ("rock", "jazz", "metal")]


class PersistentGenreView(discord.ui.View):
    """A persistent view (no timeout, fixed custom ids) with a string select."""

    def __init__(self, picked: list[list[str]], fake: FakeDiscord) -> None:
        super().__init__(timeout=None)
        self.picked = picked
        self.fake = fake

    @discord.ui.select(custom_id="pick-genre", options=GENRES, min_values=1, max_values=2)
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        self.picked.append(list(select.values))
        self.fake.notify()
        await interaction.response.send_message(f"picked {'+'.join(select.values)}", ephemeral=True)


async def test_persistent_view_select_is_answered(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    client = make_client()
    picked: list[list[str]] = []
    async with running(client, fake):
        client.add_view(PersistentGenreView(picked, fake))  # as a bot does in setup_hook
        sent = await client.get_channel(fake.channel_id).send(
            "Which genre?", view=PersistentGenreView(picked, fake)
        )
        [message] = fake.messages()
        assert message["id"] == str(sent.id)
        # What the Discord client would never send: the fake refuses it outright.
        with pytest.raises(ValueError, match="no option"):
            await fake.choose_select(alice, message, "pick-genre", ["polka"])
        with pytest.raises(ValueError, match="1 to 2 values"):
            await fake.choose_select(alice, message, "pick-genre", ["rock", "jazz", "metal"])
        with pytest.raises(ValueError, match="1 to 2 values"):
            await fake.choose_select(alice, message, "pick-genre", [])
        with pytest.raises(ValueError, match="once"):
            await fake.choose_select(alice, message, "pick-genre", ["rock", "rock"])
        with pytest.raises(LookupError, match="no string select"):
            await fake.choose_select(alice, message, "pick-mood", ["rock"])
        inter = await fake.choose_select(alice, message, "pick-genre", ["jazz", "rock"])
        await fake.wait_for(lambda f: f.interaction_responses(inter["id"]), timeout=5)
    assert inter["type"] == 3 and inter["message"]["id"] == message["id"]
    assert inter["data"] == {
        "custom_id": "pick-genre",
        "component_type": 3,
        "values": ["jazz", "rock"],
    }
    assert picked == [["jazz", "rock"]]
    [answer] = fake.interaction_responses(inter["id"])
    assert answer["type"] == 4 and answer["ephemeral"]
    assert answer["message"]["content"] == "picked jazz+rock"
    assert answer["message"]["interaction_metadata"]["interacted_message_id"] == message["id"]
    assert [m["content"] for m in fake.messages()] == ["Which genre?"]  # the answer is ephemeral
    assert fake.invalid_requests == []


class GenreModal(discord.ui.Modal, title="Name that genre"):
    def __init__(self, layout: str, got: list[tuple[str, list[str]]], fake: FakeDiscord) -> None:
        super().__init__(custom_id="genre-modal")
        self.got, self.fake = got, fake
        self.genre = discord.ui.TextInput(
            custom_id="genre-text",
            min_length=2,
            max_length=20,
            label="Genre" if layout == "action row" else None,
        )
        self.mood: discord.ui.Select | None = None
        if layout == "action row":  # the TextInput added as it is: discord.py wraps it in a row
            self.add_item(self.genre)
        else:  # discord.py 2.6+: Label (type 18) components, as Discord now recommends
            self.mood = discord.ui.Select(custom_id="mood", options=GENRES, required=False)
            self.add_item(discord.ui.TextDisplay("Tell us what you hear."))
            self.add_item(discord.ui.Label(text="Genre", component=self.genre))
            self.add_item(discord.ui.Label(text="Close to", component=self.mood))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.got.append((self.genre.value, list(self.mood.values) if self.mood else []))
        self.fake.notify()
        await interaction.response.send_message(f"noted: {self.genre.value}", ephemeral=True)


class OpenModalView(discord.ui.View):
    def __init__(self, modal: discord.ui.Modal) -> None:
        super().__init__(timeout=30)
        self.modal = modal

    @discord.ui.button(label="Name it", custom_id="open-modal")
    async def open(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(self.modal)


@pytest.mark.parametrize("layout", ["action row", "label"])
async def test_button_opens_a_modal_that_is_submitted(
    fake_discord: FakeDiscord, layout: str
) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    client = make_client()
    got: list[tuple[str, list[str]]] = []
    async with running(client, fake):
        view = OpenModalView(GenreModal(layout, got, fake))
        await client.get_channel(fake.channel_id).send("Your turn", view=view)
        [message] = fake.messages()
        click = await fake.click_button(alice, message, "open-modal")
        await fake.wait_for(lambda f: f.interaction_responses(click["id"]), timeout=5)
        [opened] = fake.interaction_responses(click["id"])
        assert (opened["type"], opened["status"]) == (9, 200)
        modal = fake.modal_of(click)
        assert modal is not None and modal["title"] == "Name that genre"
        assert modal["custom_id"] == "genre-modal"
        if layout == "action row":
            [row] = modal["components"]
            assert row["type"] == 1 and row["components"][0]["type"] == 4
            assert row["components"][0]["label"] == "Genre"
        else:
            assert [c["type"] for c in modal["components"]] == [10, 18, 18]
            label = modal["components"][1]
            assert label["label"] == "Genre" and label["component"]["type"] == 4
        # The Discord client enforces the modal's own rules.
        with pytest.raises(ValueError, match="2 to 20"):
            await fake.submit_modal(alice, click, {"genre-text": "x"})
        with pytest.raises(ValueError, match="required"):
            await fake.submit_modal(alice, click, {})
        with pytest.raises(ValueError, match="one-line"):
            await fake.submit_modal(alice, click, {"genre-text": "two\nlines"})
        with pytest.raises(LookupError, match="no input"):
            await fake.submit_modal(alice, click, {"genre-text": "rock", "other": "?"})
        with pytest.raises(LookupError, match="who opened it"):
            await fake.submit_modal(bob, click, {"genre-text": "rock"})
        values: dict[str, Any] = {"genre-text": "shoegaze"}
        if layout == "label":
            values["mood"] = ["rock"]
        submit = await fake.submit_modal(alice, click, values)
        await fake.wait_for(lambda f: f.interaction_responses(submit["id"]), timeout=5)
        with pytest.raises(LookupError, match="already submitted"):
            await fake.submit_modal(alice, click, values)
    assert submit["type"] == 5 and submit["data"]["custom_id"] == "genre-modal"
    assert submit["message"]["id"] == message["id"]  # opened from a component
    if layout == "action row":
        assert submit["data"]["components"] == [
            {
                "type": 1,
                "id": 1,
                "components": [
                    {"type": 4, "id": 2, "custom_id": "genre-text", "value": "shoegaze"}
                ],
            }
        ]
        assert got == [("shoegaze", [])]
    else:
        assert submit["data"]["components"] == [
            {"type": 10, "id": 1},
            {
                "type": 18,
                "id": 2,
                "component": {"type": 4, "id": 3, "custom_id": "genre-text", "value": "shoegaze"},
            },
            {
                "type": 18,
                "id": 4,
                "component": {"type": 3, "id": 5, "custom_id": "mood", "values": ["rock"]},
            },
        ]
        assert got == [("shoegaze", ["rock"])]
    [answer] = fake.interaction_responses(submit["id"])
    assert answer["type"] == 4 and answer["ephemeral"]
    assert answer["message"]["content"] == "noted: shoegaze"
    metadata = answer["message"]["interaction_metadata"]
    assert metadata["type"] == 5
    assert metadata["triggering_interaction_metadata"]["id"] == click["id"]
    assert fake.invalid_requests == []


async def test_modal_submit_may_update_only_a_component_message(
    fake_discord: FakeDiscord,
) -> None:
    """UPDATE_MESSAGE on a modal submit edits the message of the button that opened it;
    a modal opened by a slash command has no message to update."""
    fake = fake_discord
    alice = fake.add_user("alice")
    bot = make_bot()
    errors: list[discord.HTTPException] = []

    class Rename(discord.ui.Modal, title="Rename"):
        name = discord.ui.TextInput(label="New text", custom_id="name")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            try:
                await interaction.response.edit_message(content=f"renamed: {self.name.value}")
            except discord.HTTPException as exc:
                errors.append(exc)
                fake.notify()

    @bot.tree.command(name="rename", description="Opens a modal")
    async def rename(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Rename())

    async with running(bot, fake):
        await bot.tree.sync()
        await bot.get_channel(fake.channel_id).send("old", view=OpenModalView(Rename()))
        [message] = fake.messages()
        click = await fake.click_button(alice, message, "open-modal")
        await fake.wait_for(lambda f: f.modal_of(click), timeout=5)
        name_id = fake.modal_of(click)["components"][0]["components"][0]["custom_id"]
        submit = await fake.submit_modal(alice, click, {name_id: "new"})
        await fake.wait_for(lambda f: f.interaction_responses(submit["id"]), timeout=5)
        slash = await fake.invoke_slash(alice, "rename")
        await fake.wait_for(lambda f: f.modal_of(slash), timeout=5)
        no_message = await fake.submit_modal(alice, slash, {"name": "new"})
        await fake.wait_for(lambda f: errors, timeout=5)
    [edit] = fake.interaction_responses(submit["id"])
    assert (edit["type"], edit["status"], edit["message_id"]) == (7, 200, message["id"])
    assert fake.message(message["id"])["content"] == "renamed: new"
    assert "message" not in no_message
    assert [e.code for e in errors] == [50035]
    [refused] = fake.interaction_responses(no_message["id"])
    assert refused["errors"]["type"]["_errors"][0]["code"] == "INTERACTION_CALLBACK_TYPE_INVALID"


async def test_select_on_an_ephemeral_followup(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    bot = make_bot()

    class Pick(discord.ui.View):
        @discord.ui.select(custom_id="ephemeral-pick", options=GENRES)
        async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
            await interaction.response.edit_message(
                content=f"you chose {select.values[0]}", view=None
            )

    @bot.tree.command(name="choose", description="Ephemeral select")
    async def choose(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("one moment", ephemeral=True)
        await interaction.followup.send("pick one", view=Pick(), ephemeral=True, wait=True)

    async with running(bot, fake):
        await bot.tree.sync()
        inter = await fake.invoke_slash(alice, "choose")
        await fake.wait_for(lambda f: len(f.interaction_responses(inter["id"])) == 2, timeout=5)
        followup = fake.interaction_responses(inter["id"])[1]
        assert followup["kind"] == "followup" and followup["ephemeral"]
        message = followup["message"]
        with pytest.raises(LookupError, match="ephemeral"):
            await fake.choose_select(bob, message, "ephemeral-pick", ["jazz"])
        chosen = await fake.choose_select(alice, message, "ephemeral-pick", ["jazz"])
        await fake.wait_for(lambda f: f.interaction_responses(chosen["id"]), timeout=5)
    assert chosen["message"]["flags"] & 64 and chosen["message"]["id"] == message["id"]
    [update] = fake.interaction_responses(chosen["id"])
    assert (update["type"], update["status"]) == (7, 200)
    edited = fake.message(message["id"])
    assert edited["content"] == "you chose jazz" and edited["components"] == []
    assert fake.messages() == []  # everything stayed ephemeral


@pytest.mark.parametrize(
    ("case", "error_path", "code"),
    [
        ("title>45", ["data", "title"], "BASE_TYPE_MAX_LENGTH"),
        ("label>45", ["data", "components", "0", "label"], "BASE_TYPE_MAX_LENGTH"),
        ("duplicate custom id", ["data", "components"], "COMPONENT_CUSTOM_ID_DUPLICATED"),
    ],
)
async def test_invalid_modal_is_refused_with_50035(
    fake_discord: FakeDiscord, case: str, error_path: list[str], code: str
) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    bot = make_bot()
    errors: list[discord.HTTPException] = []

    @bot.tree.command(name="ask", description="Opens a bad modal")
    async def ask(interaction: discord.Interaction) -> None:
        modal = discord.ui.Modal(title="x" * 46 if case == "title>45" else "Ask")
        first = discord.ui.TextInput(custom_id="q")
        modal.add_item(
            discord.ui.Label(text="y" * 46 if case == "label>45" else "Q", component=first)
        )
        if case == "duplicate custom id":
            modal.add_item(
                discord.ui.Label(text="Q2", component=discord.ui.TextInput(custom_id="q"))
            )
        try:
            await interaction.response.send_modal(modal)
        except discord.HTTPException as exc:
            errors.append(exc)
            fake.notify()

    async with running(bot, fake):
        await bot.tree.sync()
        inter = await fake.invoke_slash(alice, "ask")
        await fake.wait_for(lambda f: errors, timeout=5)
    assert [(e.status, e.code) for e in errors] == [(400, 50035)]
    [refused] = fake.interaction_responses(inter["id"])
    node = refused["errors"]
    for part in error_path:
        node = node[part]
    assert [e["code"] for e in node["_errors"]] == [code]
    assert fake.modal_of(inter) is None
    with pytest.raises(LookupError, match="not answered with a modal"):
        await fake.submit_modal(alice, inter, {"q": "?"})


async def test_forged_custom_ids_reach_the_client_only_on_purpose(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    alice = fake.add_user("alice")
    client = make_client()
    seen: list[tuple[str, Any]] = []
    client.event(
        _named(
            "on_interaction",
            lambda i: seen.append((i.data["custom_id"], i.data.get("values"))),
            fake,
        )
    )

    class Buttons(discord.ui.View):
        @discord.ui.button(label="ok", custom_id="real")
        async def real(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.defer()

        @discord.ui.button(label="off", custom_id="off", disabled=True)
        async def off(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.defer()

    async with running(client, fake):
        await client.get_channel(fake.channel_id).send("buttons", view=Buttons())
        [message] = fake.messages()
        with pytest.raises(LookupError, match="no button"):
            await fake.click_button(alice, message, "forged")
        with pytest.raises(ValueError, match="disabled"):
            await fake.click_button(alice, message, "off")
        real = await fake.click_button(alice, message, "real")
        forged = await fake.click_button(alice, message, "forged", check=False)
        stale = await fake.choose_select(alice, message, "gone", ["polka"], check=False)
        await fake.wait_for(lambda f: len(seen) == 3, timeout=5)
        await fake.wait_for(lambda f: f.interaction_responses(real["id"]), timeout=5)
    assert seen == [("real", None), ("forged", None), ("gone", ["polka"])]
    assert stale["data"]["component_type"] == 3
    [ack] = fake.interaction_responses(real["id"])
    assert ack["type"] == 6
    # discord.py has no view item for the forged ids: nothing answers them.
    assert fake.interaction_responses(forged["id"]) == []
    assert fake.interaction_responses(stale["id"]) == []


# ---------------------------------------------------------------------------------------
# CDN
# ---------------------------------------------------------------------------------------


async def test_cdn_serves_attachments_and_records_partial_downloads(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    song = fake.add_attachment(b"abc" * 1000, "song.ogg", "audio/ogg")
    huge_url = fake.cdn_route("/attachments/huge.mp3", cdn.stream_bytes(200 * 2**20))
    async with aiohttp.ClientSession() as session:
        async with session.get(song["url"]) as resp:
            assert resp.status == 200 and resp.content_type == "audio/ogg"
            assert resp.content_length == 3000 and await resp.read() == b"abc" * 1000
        async with session.get(huge_url) as resp:
            assert resp.content_length == 200 * 2**20
            await resp.content.readexactly(2**20)  # a client that stops at a 1 MiB cap
            resp.close()
    await fake.wait_for(lambda f: f.downloads[-1].aborted, timeout=10)
    first, partial = fake.downloads
    assert first.complete and first.bytes_sent == 3000
    assert 2**20 <= partial.bytes_sent < 16 * 2**20  # far from the 200 MiB on offer
    assert not partial.complete


def test_schema_accepts_what_discord_py_sends_for_commands() -> None:
    """discord.py sends default_member_permissions as a string; the API accepts it."""
    body = [
        {
            "name": "retrain",
            "description": "d",
            "type": 1,
            "default_member_permissions": "8",
            "options": [],
        }
    ]
    assert schema_errors("/applications/{application_id}/commands", "PUT", body) == {}
    body[0]["description"] = "x" * 101
    errors = schema_errors("/applications/{application_id}/commands", "PUT", body)
    assert errors["0"]["description"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
