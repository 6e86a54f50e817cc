"""Keep credentials out of MLflow: params, tags and logged configs are readable by anyone who
can open the UI, and they are never deleted with the run's artifacts.

Where secrets hide in a study: a key that names one (`secret_key: ...`), userinfo in a URI
(`s3://AKIA...:wJal...@bucket`, `http://user:pw@host`), query parameters of a URI (pyarrow's
`?access_key=...&secret_key=...`, presigned `X-Amz-Signature=...`, Azure SAS `sig=...`), and
bare AWS access key ids pasted into any string. Each is replaced by `***`; everything else is
left exactly as it was, so the logged spec still says what ran.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"

# A key (or query parameter) whose value is a credential.
SECRET_NAME = re.compile(
    r"secret|passw(or)?d|passwd|token|key_id|access_key|api_?key|private_key|credential"
    r"|signature|^sig$|^x-amz-|session_key|auth",
    re.IGNORECASE,
)
# Well-known access key id shapes (AWS: AKIA/ASIA + 16), found anywhere in text.
ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
# scheme://userinfo@ -- the userinfo part of any URI inside a string.
USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")
URI = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    # "author", "authority" are not secrets; "auth", "auth_header", "x-auth" are.
    if re.search(r"author", name, re.IGNORECASE):
        return False
    return bool(SECRET_NAME.search(name))


def _scrub_query(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.query:
        return uri
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(is_secret_name(k) for k, _ in pairs):
        return uri
    query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*:/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def scrub_text(text: str) -> str:
    """`text` with userinfo, secret query values and access key ids replaced by ***."""
    text = USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = URI.sub(lambda m: _scrub_query(m.group(0)), text)
    return ACCESS_KEY_ID.sub(REDACTED, text)


def scrub(value: Any, key: str = "") -> Any:
    """A copy of a JSON-like tree (dicts, lists, scalars) with every secret redacted."""
    if key and is_secret_name(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def has_userinfo(uri: str) -> bool:
    return bool(USERINFO.match(uri))
