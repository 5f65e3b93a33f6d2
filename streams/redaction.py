"""One rule for showing a URL (or a text that may quote one) without its secrets.

Why one module: a Postgres URL can carry a password in two places, `user:PASSWORD@host` and the
query string (`?password=`, `?sslpassword=`), and every place that prints a URL — a table of
`billing dev status`, an error line, a log record — must mask both. Three hand-written copies of
this rule had drifted apart (one masked the query string, two did not); now each caller asks here.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

MASK = "***"
#: Query-string or `key=value` names whose values are secrets (password, sslpassword, api_key...).
_SECRET_NAME = re.compile(r"pass|secret|token|credential|api[-_]?key", re.IGNORECASE)
#: A URL inside free text (an exception message, a log line).
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
#: `password=value` outside a URL (libpq keyword DSNs, driver messages).
_KEY_VALUE = re.compile(r"(?P<key>\b[\w.-]+)=(?P<value>[^\s&'\"]+)")


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def _mask_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        key, eq, _ = pair.partition("=")
        pairs.append(f"{key}={MASK}" if eq and _is_secret_name(key) else pair)
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """The URL with its userinfo password and secret query values replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can take apart: show none of it
        return MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}" if at and ":" in userinfo else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, query=_mask_query(parts.query)))


def url_secrets(url: str) -> tuple[str, ...]:
    """Every secret value a URL holds, raw and URL-decoded: for masking them wherever they recur
    (a driver may quote the decoded password in its own message)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for pair in parts.query.split("&"):
        key, eq, value = pair.partition("=")
        if eq and _is_secret_name(key):
            found.append(value)
    decoded = [unquote(v) for v in found] + [unquote_plus(v) for v in found]
    return tuple(dict.fromkeys(v for v in (*found, *decoded) if v))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every URL redacted, `password=...`-style values masked and each given secret
    replaced by `***` (longest first, so a secret containing another is masked whole)."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _KEY_VALUE.sub(
        lambda m: f"{m['key']}={MASK}" if _is_secret_name(m["key"]) and m["value"] != MASK else m.group(0),
        text,
    )
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def url_target(url: str) -> str:
    """`host:port/database` for messages: enough to find the server, nothing secret."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
    except ValueError:
        return "the configured database"
