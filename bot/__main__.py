"""``genre-bot`` / ``python -m bot``: read the settings, set up logging, run the bot."""

from __future__ import annotations

import asyncio
import logging
import sys

import discord

from bot.client import GenreBot
from bot.settings import BotSettings, load_settings

log = logging.getLogger("bot")


class RedactFilter(logging.Filter):
    """Replaces a secret with ``[redacted]`` in every record passing through a handler.

    discord.py does not log the token; this guards against anything else that might.
    """

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret:
            message = record.getMessage()
            if self.secret in message:
                record.msg = message.replace(self.secret, "[redacted]")
                record.args = None
        return True


def configure_logging(settings: BotSettings, level: int = logging.INFO) -> None:
    """discord.py's coloured console logging, with the token redacted from every record."""
    discord.utils.setup_logging(level=level, root=True)
    redact = RedactFilter(settings.token.get_secret_value())
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)


async def run(settings: BotSettings) -> None:
    """Start the bot and run until it is closed."""
    async with GenreBot(settings) as bot:
        await bot.start(settings.token.get_secret_value())


def main() -> int:
    """Console entry point.

    Returns
    -------
    int
        The exit status: 0 after a clean stop, 1 when Discord refuses the bot.
    """
    settings = load_settings()  # exits with a clear message when DISCORD_TOKEN is missing
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
