"""Errors a user can cause, each with the exit code DESIGN.md gives it."""


class RoologError(Exception):
    """Bad data: the message names the file, row or request, and the column. Exit code 1."""

    exit_code = 1


class UsageProblem(RoologError):
    """The command line asks for something impossible (missing input, refused output). Exit code 2."""

    exit_code = 2


class OutputLocked(RoologError):
    """Another run holds the output's lock; a scheduler should try again later. Exit code 75."""

    exit_code = 75


def cut(text: str, limit: int = 60) -> str:
    """Text as an error line shows it: at most `limit` characters (a 32 MB row or a 1,000-item list would
    bury the line that names it)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown(value) -> str:
    """A value in an error line: its repr, cut to 60 characters."""
    return cut(repr(value))
