"""Errors the CLI prints as one line (no traceback)."""


class UserError(Exception):
    """Bad input or environment the user can fix; the message says what and where."""
