"""Errors a user can act on.

Library code raises :class:`StudioError` with one sentence that says what went wrong and what
to do; the CLI prints it on one line and exits with code 2, the UI shows it as a notice.
"""


class StudioError(Exception):
    """A mistake in the user's input or set-up, explained in one actionable sentence."""

    exit_code = 2
