"""The start-up configuration error: raised by settings, migration and the start-up checks, exit code 2."""

from __future__ import annotations

# The exit code of a worker that refuses to start on a bad configuration.
BAD_CONFIG_EXIT = 2


class SettingsError(Exception):
    """Bad configuration: the message names each env var, its value and what is allowed."""


def config_error(*problems: str) -> SettingsError:
    """The one builder of start-up configuration errors: a header, then one line per problem, each
    naming the env var (`NAME=value: what is wrong (allowed / what to set instead)`)."""
    return SettingsError("\n  ".join(["Invalid worker configuration:", *problems]))
