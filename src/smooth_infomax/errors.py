"""User-facing errors.

Anything the user can fix (a bad file, a wrong config key, a missing path) is raised as :class:`UserError`
with a one-line message that names the file or key and says what to do. The CLI prints the message and
exits with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input; its message is a single line meant for the terminal."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class AudioError(UserError):
    """An audio file that cannot be read or used (names the file)."""


class ConfigError(UserError):
    """A configuration value that is missing, unknown or invalid (names the key)."""


class DatasetError(UserError):
    """A dataset folder whose layout, split or label files are missing or inconsistent."""


class TrainingDiverged(UserError):
    """A non-finite loss stopped training (names the step and module)."""
