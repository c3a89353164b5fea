"""The one error type of reports: a bad input that the command line reports in one line."""

from __future__ import annotations


class ReportError(Exception):
    """A report or comparison cannot be made (missing results, unreadable reference, ...).

    The message is one line meant for the user; the command line prints it and exits 2.
    """
