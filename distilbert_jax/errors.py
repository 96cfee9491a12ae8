"""The one exception type that means "the user gave us something wrong".

The CLI turns a `UserError` into a single `error: ...` line and exit status 2; any other
exception is a bug in this package and keeps its traceback. Messages say what was wrong
and what to do about it.
"""


class UserError(ValueError):
    """Bad input (a path, a file, a config, a text): the message is shown to the user as-is."""
