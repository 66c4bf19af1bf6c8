"""Errors a user can fix. The CLI prints them as one line and exits with status 2, no traceback."""


class UserError(Exception):
    """Bad input, a missing file, a protocol mismatch: something the user can act on."""
