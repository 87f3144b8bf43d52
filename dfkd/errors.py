"""The one exception type users see: a message that names the file, the value and the fix."""


class DfkdError(Exception):
    """An error the user can act on. The CLI prints it without a traceback and exits 2."""
