"""User-facing errors: the command line prints their message and exits non-zero, no traceback."""


class GuidedError(Exception):
    """Bad input or configuration that the user can fix; the message says where and what was expected."""


class GuidedFileError(GuidedError):
    """A guided, base-embedding or schema file is missing, unreadable or malformed."""


class CheckpointError(GuidedError):
    """A checkpoint is unsafe to load or was made for another model or dataset."""


class ConfigError(GuidedError):
    """An unknown model name or an impossible combination of options."""
