"""User-facing error type.

Anything a user can get wrong (a file, a key, a value, a command-line option) raises ``UserError`` with one
message that names the thing and says what is allowed; the CLI prints it and exits non-zero without a traceback.
Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""


class UserError(ValueError):
    """Bad input from the user: the message alone must tell them what to fix."""
