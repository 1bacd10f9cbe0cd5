"""The one error class for mistakes a user can cause (bad path, bad option, corrupt file)."""


class UserError(Exception):
    """A problem with the user's input or options; the CLI prints it as one line, exit 2."""
