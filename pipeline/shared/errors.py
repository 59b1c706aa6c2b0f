"""User-facing error type.

Anything a user can get wrong (a file, a key, a value, a command-line option) raises ``UserError`` with one
message that names the thing and says what is allowed; the CLI prints it and exits non-zero without a traceback.
Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""


class UserError(ValueError):
    """Bad input from the user: the message alone must tell them what to fix."""


class Terminated(KeyboardInterrupt):
    """The command was stopped by SIGTERM (what a cloud sends a spot node before it takes it); what was kept has
    been said. The CLI exits 143 (128 + SIGTERM), as terminated programs do."""
