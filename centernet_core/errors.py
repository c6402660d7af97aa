"""Errors the CLI turns into one clear line and an exit code."""


class CenterNetError(Exception):
    """A failure the user can act on. ``exit_code`` 2: usage or config; 1: runtime."""

    exit_code = 1


class ConfigError(CenterNetError):
    """Bad command line, config key, value or file."""

    exit_code = 2


class DataError(CenterNetError):
    """Input data that cannot be used as given."""

    exit_code = 1


class StorageError(CenterNetError):
    """A path whose storage scheme is not available in this environment."""

    exit_code = 2
