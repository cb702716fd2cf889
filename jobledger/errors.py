"""The one base class for errors a user can fix: the CLI prints them as one line, exit 1."""


class JobledgerError(Exception):
    exit_code = 1
