"""``genre-bot`` / ``python -m bot``: read the settings, set up logging, run the bot."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import discord

from bot.client import GenreBot, shard_options
from bot.settings import BotSettings, load_settings

log = logging.getLogger("bot")


class RedactFilter(logging.Filter):
    """Replaces a secret with ``[redacted]`` in every record passing through a handler: in the
    message, and in the traceback and stack of an exception logged with it.

    discord.py does not log the token; this guards against anything else that might (an
    exception whose text quotes a request header, say).
    """

    #: The redacted traceback, kept on the record: formatters (discord.py's coloured one among
    #: them) clear ``exc_text`` after use, and each handler runs this filter again.
    ATTRIBUTE = "_redacted_exc_text"

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secret:
            return True
        message = record.getMessage()
        if self.secret in message:
            record.msg = self._redact(message)
            record.args = None
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            setattr(record, self.ATTRIBUTE, self._redact(text))
            record.exc_info = None  # formatters would print it again from here, unredacted
        if getattr(record, self.ATTRIBUTE, None):
            record.exc_text = getattr(record, self.ATTRIBUTE)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _redact(self, text: str) -> str:
        return text.replace(self.secret, "[redacted]")


def configure_logging(settings: BotSettings, level: int = logging.INFO) -> None:
    """discord.py's coloured console logging, with the token redacted from every record."""
    discord.utils.setup_logging(level=level, root=True)
    redact = RedactFilter(settings.token.get_secret_value())
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)


async def run(settings: BotSettings) -> None:
    """Start the bot and run until it is closed, or until SIGINT or SIGTERM (Ctrl-C, ``docker
    stop``, systemd) asks it to close: it then answers what it had accepted first. The handlers
    are installed here, not inherited: a process started in the background by a shell ignores
    SIGINT unless told otherwise."""
    async with GenreBot(settings) as bot:
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []
        for stop in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stop, lambda: closing.append(loop.create_task(bot.close())))
        await bot.start(settings.token.get_secret_value())
        # start() returns once the gateway is closed, before close() has answered what was in
        # flight and closed the bot's sessions: let it finish.
        await asyncio.gather(*closing)
    log.info("stopped")


def main() -> int:
    """Console entry point.

    Returns
    -------
    int
        The exit status: 0 after a clean stop, 1 when Discord refuses the bot.
    """
    settings = load_settings()  # exits with a clear message when DISCORD_TOKEN is missing
    try:
        shard_options(settings)  # a bad shard setting is a start-up error, not a traceback
    except ValueError as exc:
        raise SystemExit(f"genre-bot cannot start: {exc}") from None
    configure_logging(settings)
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        log.info("stopped")
    except discord.LoginFailure:
        log.error("Discord refused the token in DISCORD_TOKEN. Check it in the Developer Portal.")
        return 1
    except discord.PrivilegedIntentsRequired:
        log.error(
            "Enable the Message Content intent for this bot in the Discord Developer "
            "Portal (Bot > Privileged Gateway Intents), then start it again."
        )
        return 1
    except discord.ConnectionClosed as exc:
        # Discord's word on the shard settings: say which setting to change, not a traceback.
        if exc.code == 4010:
            log.error("Discord refused the shard: check GENRE_SHARD_IDS and GENRE_SHARD_COUNT.")
        elif exc.code == 4011:
            log.error(
                "Discord requires more shards for this many servers: raise GENRE_SHARD_COUNT "
                "in every process, or unset it to use Discord's recommended count."
            )
        else:
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
