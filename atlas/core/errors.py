"""User-facing errors.

An :class:`AtlasError` is a problem with the user's input or environment. The CLI prints its
message as one paragraph (no traceback unless ``--verbose``) and exits non-zero. Messages say
what is wrong, where (file, data set, column, gene) and what to do.
"""


class AtlasError(Exception):
    """A problem the user can fix; the message names what, where and what to do."""


class ConfigError(AtlasError):
    """An invalid pipeline or ingest configuration."""


class InputDataError(AtlasError):
    """A data set that cannot be read or is not what its configuration says it is."""


class RunDirError(AtlasError):
    """An output location that already holds something we must not overwrite."""
