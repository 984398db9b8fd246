"""Validate request bodies against Discord's official OpenAPI spec.

The spec (``../shared/data/discord/openapi.json``) is large, so it is loaded once and a
Draft 2020-12 validator is compiled lazily per (route, method) and cached at module level.

Where the spec is stricter than the live API (and discord.py relies on the live behaviour), a
small, documented patch relaxes it: see :data:`SPEC_PATCHES`. Where Discord enforces limits the
spec does not express (total embed size, 2,000-character bot messages, empty messages), the
checks live in :func:`extra_message_errors`.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

SPEC_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "discord" / "openapi.json"
)

#: Discord's documented limit on the characters of all embeds of one message together.
EMBED_TOTAL_LIMIT = 6000
#: Bots may send at most 2,000 characters of content (the spec allows 4,000 for Nitro users).
BOT_CONTENT_LIMIT = 2000

# The spec types snowflakes as digit strings; the API (and discord.py) also send integers.
_SNOWFLAKE = {
    "anyOf": [
        {"type": "string", "pattern": "^(0|[1-9][0-9]*)$"},
        {"type": "integer", "minimum": 0},
    ]
}

#: Human-readable list of the relaxations applied to the spec (documented for reviewers).
SPEC_PATCHES = (
    "SnowflakeType accepts integers as well as digit strings.",
    "Permission bit-sets (default_member_permissions) accept digit strings, as the API does.",
)


class SpecUnavailable(RuntimeError):
    """Raised when ``openapi.json`` is not present beside the repository."""


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """Load and patch the OpenAPI document (cached for the whole process).

    Returns
    -------
    dict
        The parsed spec with :data:`SPEC_PATCHES` applied.

    Raises
    ------
    SpecUnavailable
        If the spec file is missing.
    """
    if not SPEC_PATH.is_file():
        raise SpecUnavailable(f"Discord OpenAPI spec not found at {SPEC_PATH}")
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    schemas["SnowflakeType"] = copy.deepcopy(_SNOWFLAKE)
    _relax_permission_fields(spec)
    return spec


def _relax_permission_fields(node: Any) -> None:
    """Let ``default_member_permissions`` be a digit string (discord.py sends it that way)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "default_member_permissions" and isinstance(value, dict):
                node[key] = {"anyOf": [value, {"type": "string", "pattern": "^[0-9]+$"}]}
            else:
                _relax_permission_fields(value)
    elif isinstance(node, list):
        for item in node:
            _relax_permission_fields(item)


def _body_schema(spec: dict[str, Any], template: str, method: str) -> dict[str, Any] | None:
    operation = spec["paths"].get(template, {}).get(method.lower())
    if not operation:
        return None
    content = (operation.get("requestBody") or {}).get("content") or {}
    media = content.get("application/json")
    return None if media is None else media.get("schema")


# Module-level cache: compiling against the 1 MB spec is the slow part.
_VALIDATORS: dict[tuple[str, str], Draft202012Validator | None] = {}


def validator_for(template: str, method: str) -> Draft202012Validator | None:
    """Return the cached validator for a route's JSON request body.

    Parameters
    ----------
    template : str
        OpenAPI path template, e.g. ``"/channels/{channel_id}/messages"``.
    method : str
        HTTP method.

    Returns
    -------
    Draft202012Validator or None
        ``None`` when the spec defines no JSON body for that operation.
    """
    key = (template, method.upper())
    if key not in _VALIDATORS:
        spec = load_spec()
        schema = _body_schema(spec, template, method)
        if schema is None:
            _VALIDATORS[key] = None
        else:
            # Embed the route schema in a root that carries `components`, so that the spec's
            # "#/components/schemas/..." references resolve against it.
            root = {"components": spec["components"], **schema}
            _VALIDATORS[key] = Draft202012Validator(
                root, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
    return _VALIDATORS[key]


_CODES = {
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minItems": "BASE_TYPE_MIN_LENGTH",
    "required": "BASE_TYPE_REQUIRED",
    "type": "BASE_TYPE_BAD_TYPE",
    "enum": "BASE_TYPE_CHOICES",
    "const": "BASE_TYPE_CHOICES",
    "maximum": "NUMBER_TYPE_MAX",
    "minimum": "NUMBER_TYPE_MIN",
    "pattern": "STRING_TYPE_REGEX",
    "format": "BASE_TYPE_BAD_FORMAT",
}


def _is_wrong_branch(error: ValidationError) -> bool:
    # A union member the body was not meant for: the value is of another JSON type
    # (e.g. the `null` arm of `oneOf: [null, Embed]`), or a `type` discriminator const/enum
    # (callbacks, command options) does not match.
    path = list(error.relative_path)
    if not path and error.validator == "type":
        return True
    return path == ["type"] and error.validator in ("enum", "const")


def _leaves(error: ValidationError) -> list[ValidationError]:
    """Reduce an anyOf/oneOf failure to the errors of the branch the body was meant for."""
    if not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    intended = [errs for errs in branches.values() if not any(map(_is_wrong_branch, errs))]
    if intended:
        # Rank this level's errors only: best_match() would descend into nested unions and
        # return an error whose schema path belongs to another level.
        chosen = max((e for errs in intended for e in errs), key=relevance)
        branch = branches[chosen.relative_schema_path[0]]
    else:
        discriminators = [e for e in error.context if list(e.relative_path) == ["type"]]
        if discriminators:
            return [discriminators[0]]
        branch = branches[max(error.context, key=relevance).relative_schema_path[0]]
    return [leaf for sub in branch for leaf in _leaves(sub)]


def _message(error: ValidationError) -> str:
    v = error.validator_value
    if error.validator in ("maxLength", "maxItems"):
        return f"Must be {v} or fewer in length."
    if error.validator in ("minLength", "minItems"):
        return f"Must be {v} or more in length."
    if error.validator == "required":
        return "This field is required"
    if error.validator == "type":
        return f"Must be of type {v}."
    if error.validator in ("enum", "const"):
        return f"Value must be one of {v!r}."
    return error.message


def _insert(errors: dict[str, Any], path: Iterable[Any], code: str, message: str) -> None:
    node = errors
    for part in path:
        node = node.setdefault(str(part), {})
    node.setdefault("_errors", []).append({"code": code, "message": message})


def schema_errors(template: str, method: str, body: Any) -> dict[str, Any]:
    """Validate a JSON body; return Discord-shaped ``errors`` (empty when valid).

    Parameters
    ----------
    template : str
        OpenAPI path template of the route.
    method : str
        HTTP method.
    body : Any
        The decoded JSON body.

    Returns
    -------
    dict
        Nested ``{"field": {"0": {"_errors": [{"code", "message"}]}}}`` as Discord returns
        under ``"errors"`` in a 50035 response; ``{}`` if the body is valid.
    """
    validator = validator_for(template, method)
    if validator is None:
        return {}
    errors: dict[str, Any] = {}
    for leaf in (leaf for error in validator.iter_errors(body) for leaf in _leaves(error)):
        path = list(leaf.absolute_path)
        if leaf.validator == "required" and isinstance(leaf.instance, dict):
            # Point at the missing key, as Discord does.
            missing = [k for k in leaf.validator_value if k not in leaf.instance]
            path += missing[:1]
        _insert(errors, path, _CODES.get(str(leaf.validator), "BASE_TYPE_INVALID"), _message(leaf))
    return errors


def embed_length(embed: dict[str, Any]) -> int:
    """Count the characters Discord sums towards the 6,000-character embed limit.

    Parameters
    ----------
    embed : dict
        One embed object as sent in a request.

    Returns
    -------
    int
        Length of title + description + field names/values + footer text + author name.
    """

    def text(value: Any) -> int:
        return len(value) if isinstance(value, str) else 0

    total = text(embed.get("title")) + text(embed.get("description"))
    for field in embed.get("fields") or []:
        if isinstance(field, dict):
            total += text(field.get("name")) + text(field.get("value"))
    for key, sub in (("footer", "text"), ("author", "name")):
        part = embed.get(key)
        if isinstance(part, dict):
            total += text(part.get(sub))
    return total


def extra_message_errors(body: Any) -> dict[str, Any]:
    """Checks Discord applies to message bodies that the schema cannot express.

    Parameters
    ----------
    body : Any
        Decoded JSON message body (create or edit).

    Returns
    -------
    dict
        Discord-shaped ``errors`` (empty when valid).
    """
    errors: dict[str, Any] = {}
    if not isinstance(body, dict):
        return errors
    content = body.get("content")
    if isinstance(content, str) and len(content) > BOT_CONTENT_LIMIT:
        _insert(
            errors,
            ["content"],
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {BOT_CONTENT_LIMIT} or fewer in length.",
        )
    embeds = body.get("embeds")
    if isinstance(embeds, list):
        total = sum(embed_length(e) for e in embeds if isinstance(e, dict))
        if total > EMBED_TOTAL_LIMIT:
            _insert(
                errors,
                ["embeds"],
                "MAX_EMBED_SIZE_EXCEEDED",
                f"Embed size exceeds maximum size of {EMBED_TOTAL_LIMIT}",
            )
    return errors


def is_empty_message(body: dict[str, Any], *, has_files: bool) -> bool:
    """Whether a new message would have nothing to show (Discord answers 50006).

    Parameters
    ----------
    body : dict
        Decoded JSON message body.
    has_files : bool
        Whether files were uploaded with it.

    Returns
    -------
    bool
        True if there is no content, embed, component, sticker, poll or file.
    """
    if has_files:
        return False
    return not any(
        body.get(key) for key in ("content", "embeds", "components", "sticker_ids", "poll")
    )


__all__ = [
    "EMBED_TOTAL_LIMIT",
    "SPEC_PATCHES",
    "SpecUnavailable",
    "embed_length",
    "extra_message_errors",
    "is_empty_message",
    "load_spec",
    "schema_errors",
    "validator_for",
]
