"""The one exception library code raises for a user mistake.

The CLI turns it into a single line and a non-zero exit; Python callers can catch it.
"""


class PdmpError(Exception):
    """A user-facing error: the message names the cause and the fix.

    ``exit_code`` is 2 for a bad value or option (as for a usage error), 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
