"""Builders for Discord-shaped JSON objects (users, members, guilds, messages, ...).

Shapes follow the Discord API reference closely enough that discord.py 2.7 parses them
without special cases; every id is a real, time-ordered snowflake (discord.py derives
timestamps from them).
"""

from __future__ import annotations

import datetime as dt
import itertools
import mimetypes
import time
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Permission bits used by the fake (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 53) - 1

#: What @everyone may do in the fake guild (a typical community server).
EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | ADD_REACTIONS
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_APPLICATION_COMMANDS
)
#: What the bot's managed role grants (what an invite with sensible scopes asks for).
BOT_PERMISSIONS = EVERYONE_PERMISSIONS

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12


class SnowflakeFactory:
    """Generates unique, increasing snowflakes from the current time."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._last = 0

    def __call__(self) -> int:
        """Return a new snowflake.

        Returns
        -------
        int
            ``(ms since Discord epoch) << 22 | increment``, strictly increasing.
        """
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22 | (next(self._counter) & 0xFFF)
        # Strictly increasing even within one millisecond / after a counter wrap.
        value = max(value, self._last + 1)
        self._last = value
        return value

    def on_shard(self, shard_id: int, shard_count: int) -> int:
        """A new snowflake that Discord's formula ``(id >> 22) % shard_count`` puts on
        ``shard_id``: the next one, its timestamp moved up to ``shard_count - 1`` ms ahead.

        Parameters
        ----------
        shard_id, shard_count : int
            The shard, ``0 <= shard_id < shard_count``.

        Returns
        -------
        int
            The snowflake; later ones stay greater.
        """
        if not 0 <= shard_id < shard_count:
            raise ValueError(f"no shard {shard_id} among {shard_count}")
        value = self()
        ms = value >> 22
        value = ((ms + (shard_id - ms) % shard_count) << 22) | (value & ((1 << 22) - 1))
        self._last = max(self._last, value)
        return value


def iso_now() -> str:
    """Current UTC time in Discord's ISO-8601 form.

    Returns
    -------
    str
        e.g. ``"2026-07-01T12:00:00.123000+00:00"``.
    """
    return dt.datetime.now(dt.UTC).isoformat()


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    """A user object.

    Parameters
    ----------
    user_id : int
        Snowflake.
    name : str
        Username (also used as global display name).
    bot : bool
        Whether the account is a bot.

    Returns
    -------
    dict
        Discord user object.
    """
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None if bot else name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "primary_guild": None,
    }


def member(user_obj: dict[str, Any], roles: list[int], joined_at: str) -> dict[str, Any]:
    """A guild member object with its user.

    Parameters
    ----------
    user_obj : dict
        The member's user object.
    roles : list of int
        Role ids (not including @everyone, as Discord sends them).
    joined_at : str
        ISO timestamp.

    Returns
    -------
    dict
        Discord guild member object.
    """
    return {
        "user": user_obj,
        "roles": [str(r) for r in roles],
        "joined_at": joined_at,
        "nick": None,
        "avatar": None,
        "banner": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }


def role(
    role_id: int, name: str, permissions: int, position: int, *, managed: bool = False
) -> dict[str, Any]:
    """A role object.

    Parameters
    ----------
    role_id : int
        Snowflake (the @everyone role's id equals the guild id).
    name : str
        Role name.
    permissions : int
        Permission bit set.
    position : int
        Position in the role list (0 for @everyone).
    managed : bool
        Whether an integration (the bot) owns the role.

    Returns
    -------
    dict
        Discord role object.
    """
    return {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }


def text_channel(channel_id: int, guild_id: int, name: str, position: int) -> dict[str, Any]:
    """A guild text channel object.

    Parameters
    ----------
    channel_id, guild_id : int
        Snowflakes.
    name : str
        Channel name.
    position : int
        Sorting position.

    Returns
    -------
    dict
        Discord channel object (type 0).
    """
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "parent_id": None,
        "flags": 0,
    }


def dm_channel(channel_id: int, recipient: dict[str, Any]) -> dict[str, Any]:
    """A DM channel object.

    Parameters
    ----------
    channel_id : int
        Snowflake.
    recipient : dict
        The other user's object.

    Returns
    -------
    dict
        Discord channel object (type 1).
    """
    return {
        "id": str(channel_id),
        "type": 1,
        "last_message_id": None,
        "recipients": [recipient],
        "flags": 0,
    }


def attachment(
    attachment_id: int, filename: str, size: int, url: str, content_type: str | None
) -> dict[str, Any]:
    """An attachment object as it appears on a message.

    Parameters
    ----------
    attachment_id : int
        Snowflake.
    filename : str
        File name.
    size : int
        Size in bytes (what Discord reports; the CDN may be made to disagree).
    url : str
        CDN URL.
    content_type : str or None
        MIME type; omitted from the object when None, as Discord does for unknown types.

    Returns
    -------
    dict
        Discord attachment object.
    """
    data: dict[str, Any] = {
        "id": str(attachment_id),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
    }
    if content_type is not None:
        data["content_type"] = content_type
    return data


def guess_content_type(filename: str) -> str | None:
    """MIME type Discord would infer from a file name.

    Parameters
    ----------
    filename : str
        File name.

    Returns
    -------
    str or None
        The guessed type, or None when unknown.
    """
    return mimetypes.guess_type(filename)[0]


def strip_nulls(value: Any) -> Any:
    """Drop ``None`` members recursively (Discord omits null embed fields when storing).

    Parameters
    ----------
    value : Any
        JSON value.

    Returns
    -------
    Any
        The value without null-valued object members.
    """
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def normalise_embeds(embeds: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Embeds as Discord stores them: nulls dropped, ``type`` defaulting to ``rich``.

    Parameters
    ----------
    embeds : list of dict or None
        Embeds from a request body.

    Returns
    -------
    list of dict
        Stored embeds.
    """
    out = []
    for embed in embeds or []:
        stored = strip_nulls(embed)
        stored.setdefault("type", "rich")
        out.append(stored)
    return out
