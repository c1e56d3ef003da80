"""Exceptions raised at start-up or for unusable arguments. Bad *records* never raise: they become dead letters."""

from __future__ import annotations

from sluice.core.contracts import ErrorType

__all__ = ["ConfigError", "GeoIpDatabaseError", "LogFormatError", "RecordRejected", "SluiceError"]


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class ConfigError(SluiceError):
    """A setting, argument or configuration file is unusable; the message says which and why."""


class LogFormatError(ConfigError):
    """An nginx ``log_format`` string cannot be compiled into a parser."""


class GeoIpDatabaseError(ConfigError):
    """A GeoIP database is missing, unreadable, corrupt or of the wrong type; the message names the file."""


class RecordRejected(SluiceError):
    """Internal signal inside a parser: this record becomes a dead letter of ``error_type``."""

    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
