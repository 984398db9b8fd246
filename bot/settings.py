"""The bot's settings: one object, read once from the environment and ``.env``.

Every setting is named by its environment variable (see ``.env.example``); the attribute names
are the short forms the code uses. The token is a ``SecretStr``: it prints as ``**********``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from genre_core.settings import Limits

AdminPermission = Literal["manage_guild", "administrator", "none"]


def _env(name: str) -> AliasChoices:
    # The environment variable, and the attribute name for code that builds settings directly.
    return AliasChoices(name, name.lower())


class BotSettings(BaseSettings):
    """Everything the bot reads from its environment."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # "KEY=" in .env means "use the default"
        populate_by_name=True,
        frozen=True,
    )

    token: SecretStr = Field(validation_alias=_env("DISCORD_TOKEN"))
    api_base: str = Field("https://discord.com/api/v10", validation_alias=_env("DISCORD_API_BASE"))
    gateway_url: str = Field(
        "wss://gateway.discord.gg/", validation_alias=_env("DISCORD_GATEWAY_URL")
    )
    dev_guild_id: int | None = Field(None, validation_alias=_env("DISCORD_DEV_GUILD_ID"))

    model_dir: Path = Field(Path("models/genre"), validation_alias=_env("GENRE_MODEL_DIR"))
    state_dir: Path = Field(Path("var"), validation_alias=_env("GENRE_STATE_DIR"))
    data_dir: Path = Field(Path("../shared/data"), validation_alias=_env("GENRE_DATA_DIR"))

    max_bytes: int = Field(25 * 1024 * 1024, gt=0, validation_alias=_env("GENRE_MAX_BYTES"))
    max_duration_s: float = Field(20 * 60.0, gt=0, validation_alias=_env("GENRE_MAX_DURATION_S"))
    download_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("GENRE_DOWNLOAD_TIMEOUT_S"))
    max_redirects: int = Field(3, ge=0, validation_alias=_env("GENRE_MAX_REDIRECTS"))
    allow_private_urls: bool = Field(False, validation_alias=_env("GENRE_ALLOW_PRIVATE_URLS"))

    decode_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("GENRE_DECODE_TIMEOUT_S"))
    job_timeout_s: float = Field(120.0, gt=0, validation_alias=_env("GENRE_JOB_TIMEOUT_S"))

    workers: int = Field(0, ge=0, validation_alias=_env("GENRE_WORKERS"))
    queue_size: int = Field(16, ge=1, validation_alias=_env("GENRE_QUEUE_SIZE"))
    user_concurrency: int = Field(2, ge=1, validation_alias=_env("GENRE_USER_CONCURRENCY"))
    user_rate: int = Field(6, ge=1, validation_alias=_env("GENRE_USER_RATE"))
    user_rate_window_s: float = Field(60.0, gt=0, validation_alias=_env("GENRE_USER_RATE_WINDOW_S"))

    admin_permission: AdminPermission = Field(
        "manage_guild", validation_alias=_env("GENRE_ADMIN_PERMISSION")
    )
    # NoDecode: the raw string reaches _split_ids, which accepts "1,2" as well as "[1, 2]".
    admin_ids: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), validation_alias=_env("GENRE_ADMIN_IDS")
    )

    # The community label store (votes, corrections, admins' labels).
    database_url: str = Field("", validation_alias=_env("GENRE_DATABASE_URL"))
    votes_to_accept: int = Field(2, ge=1, validation_alias=_env("GENRE_VOTES_TO_ACCEPT"))
    vote_rate: int = Field(20, ge=1, validation_alias=_env("GENRE_VOTE_RATE"))
    vote_window_s: float = Field(600.0, gt=0, validation_alias=_env("GENRE_VOTE_WINDOW_S"))
    keep_days: float = Field(90.0, gt=0, validation_alias=_env("GENRE_KEEP_DAYS"))
    keep_audio_s: float = Field(30.0, ge=0, validation_alias=_env("GENRE_KEEP_AUDIO_S"))
    new_genre_min_clips: int = Field(20, ge=1, validation_alias=_env("GENRE_NEW_GENRE_MIN_CLIPS"))
    new_genre_min_uploaders: int = Field(
        3, ge=1, validation_alias=_env("GENRE_NEW_GENRE_MIN_UPLOADERS")
    )

    # A fleet: analysis on Celery workers over Redis, shards split between processes, metrics.
    queue_url: str = Field("", validation_alias=_env("GENRE_QUEUE_URL"))
    shard_ids: Annotated[frozenset[int], NoDecode] | None = Field(
        None, validation_alias=_env("GENRE_SHARD_IDS")
    )
    shard_count: int | None = Field(None, ge=1, validation_alias=_env("GENRE_SHARD_COUNT"))
    metrics_port: int = Field(0, ge=0, le=65535, validation_alias=_env("GENRE_METRICS_PORT"))

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("DISCORD_TOKEN is empty")
        return value

    @field_validator("admin_ids", "shard_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        # "123,456", "123 456" or a JSON list.
        if isinstance(value, str):
            return [part for part in value.strip("[] ").replace(",", " ").split() if part]
        if isinstance(value, int):
            return [value]
        return value

    @property
    def limits(self) -> Limits:
        """Audio limits for the classifier, from these settings."""
        return Limits(
            max_bytes=self.max_bytes,
            max_input_duration_s=self.max_duration_s,
            decode_timeout_s=self.decode_timeout_s,
            keep_audio_s=self.keep_audio_s,
        )

    @property
    def label_database_url(self) -> str:
        """``GENRE_DATABASE_URL``, or a SQLite file in the state folder."""
        return self.database_url or f"sqlite+aiosqlite:///{Path(self.state_dir) / 'labels.db'}"


def load_settings() -> BotSettings:
    """Read the settings, turning a missing or bad value into one clear sentence.

    Returns
    -------
    BotSettings

    Raises
    ------
    SystemExit
        With a message naming the setting to fix (never its value).
    """
    try:
        return BotSettings()
    except SettingsError as exc:
        raise SystemExit(f"genre-bot cannot start: {exc}") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False):
            name = str(error["loc"][0]) if error["loc"] else "settings"
            name = _ENV_NAMES.get(name, name.upper())
            if error["type"] == "missing" and name == "DISCORD_TOKEN":
                lines.append(
                    "DISCORD_TOKEN is not set. Put your bot token in the environment or "
                    "in a .env file (see .env.example)."
                )
            else:
                lines.append(f"{name}: {error['msg']}")
        raise SystemExit("genre-bot cannot start:\n  " + "\n  ".join(lines)) from None


_ENV_NAMES = {
    name: field.validation_alias.choices[0]  # type: ignore[union-attr]
    for name, field in BotSettings.model_fields.items()
}
