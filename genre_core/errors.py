"""Typed errors. Each carries a message written for the person who sent the clip."""

from __future__ import annotations


class GenreError(Exception):
    """Base class: ``str(error)`` is a friendly, complete sentence a user can read."""

    #: Short machine-readable reason, stable across releases (used in JSON output and logs).
    code = "error"


class AudioError(GenreError):
    """The clip could not be turned into audio the model can analyse."""

    code = "audio"


class NotAudioError(AudioError):
    code = "not_audio"


class EmptyAudioError(AudioError):
    code = "empty"


class TooShortError(AudioError):
    code = "too_short"


class TooLongError(AudioError):
    code = "too_long"


class SilentAudioError(AudioError):
    code = "silent"


class TooLargeError(AudioError):
    code = "too_large"


class CorruptAudioError(AudioError):
    code = "corrupt"


class DecoderMissingError(AudioError):
    code = "decoder_missing"


class DecodeTimeoutError(AudioError):
    code = "decode_timeout"


class ModelError(GenreError):
    """The model artifact is missing, incomplete or does not match this code."""

    code = "model"


class ModelMissingError(ModelError):
    code = "model_missing"


class ModelMismatchError(ModelError):
    code = "model_mismatch"


class DataMissingError(GenreError):
    """Training or evaluation data is not where it should be."""

    code = "data_missing"
