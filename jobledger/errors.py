"""The one base class for errors a user can fix: the CLI prints them as one line, exit 1."""
import reprlib

# How an error message quotes a value from input: its repr, cut short (a spec can put megabytes, or text
# that looks like another error line, anywhere).
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 80
_QUOTE.maxdict = _QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxset = 4
_QUOTE.maxlevel = 2


def shown(value: object) -> str:
    """``repr(value)``, at most about 80 characters (reprlib elides the middle of a long one)."""
    return _QUOTE.repr(value)


class JobledgerError(Exception):
    exit_code = 1
