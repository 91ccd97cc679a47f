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
