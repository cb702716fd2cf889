"""Keeping credentials out of everything jobledger prints, logs or records.

``scrub`` removes connection strings, account keys and SAS signatures from any text (error
messages of the Azure SDK or the Kubernetes client included); ``redact_url`` drops a URL's
query (where a SAS token lives) and user info; ``refuse_sas`` is the one check every entry
point that takes a URL (store, registry) runs before the URL is used or recorded.
"""
from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from .errors import JobledgerError

CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
_SECRET = re.compile(r"(AccountKey|SharedAccessSignature|sig|token|password)=[^;&\s'\"]+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


class SecretInUrl(JobledgerError):
    """A URL carries a credential (a SAS query string or user info); it is neither used nor echoed."""


def scrub(text: str) -> str:
    """``text`` without the connection string, account keys, SAS signatures and bearer tokens."""
    conn = os.environ.get(CONNECTION_ENV)
    if conn:
        text = text.replace(conn, "<connection string>")
    text = _SECRET.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    return _BEARER.sub(r"\1<redacted>", text)


def redact_url(url: str) -> str:
    """A URL fit to print or record: no query string (SAS token), no fragment, no user info."""
    if "://" not in url:
        return url.split("?", 1)[0]
    head, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    path = path.split("?", 1)[0].split("#", 1)[0]
    netloc = netloc.split("?", 1)[0].split("#", 1)[0]
    return f"{head}://{netloc}{slash}{path}"


def refuse_sas(url: str, what: str, error: type[JobledgerError] = SecretInUrl) -> str:
    """``url`` unchanged when it carries no credential; otherwise ``error`` (one line) showing the
    URL without its secret. ``what`` names the option (``--store``, ``--registry``)."""
    if "://" not in url:
        return url  # a local path: '?' and '@' are ordinary file name characters there
    if "?" in url or "@" in urlsplit(url).netloc:
        raise error(f"{what} {redact_url(url)}: URLs carrying a SAS token or credentials are refused "
                          f"(they would be recorded and shown); set {CONNECTION_ENV} instead")
    return url
