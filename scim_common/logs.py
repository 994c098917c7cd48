"""One logging setup for every process: JSON lines (default) or text, on stderr.

Secrets never reach the log, at any level ``--log-level`` offers. Our own code logs none; the
libraries below us would: kubernetes_asyncio's REST client logs every response body at debug (the
Secrets holding SCIM tokens, virtual keys and the master key included), aiohttp's server logs a
malformed request with the offending raw header line (``Authorization: Bearer ...`` included) at
error, and Kopf logs the bodies, diffs and patches of the resources it handles at debug. So those
loggers are capped, and one filter on the handler takes raw request data and object bodies out of what
is left, whichever logger the record comes from."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

# Loggers that put request or response bodies into records below this level: never let those through.
BODY_LOGGERS: dict[str, int] = {
    "kubernetes_asyncio": logging.INFO,  # client.rest: "response body: ..." for every call, at debug
    "aiohttp.client": logging.INFO,
    # Request lines with their query strings (SCIM filters name people); the endpoint serves without an
    # access log, and Kopf's probe server would log every kubelet probe.
    "aiohttp.access": logging.WARNING,
}

# Kopf logs these with the object's body, a diff or a patch appended (f-strings, so record.msg is the
# whole text): keep the words, drop what follows them.
_BODY_DUMPS = re.compile(
    r"^(?P<head>(?:Merge|JSON)-patching the (?:resource|status) with: "
    r"|.* is in progress: |.* diff: |Could not apply the patch in full .*?Remaining: )"
)

# The first line of an HTTP parser error is a description like "Invalid header value char:"; what
# follows quotes the raw bytes of the request. Only a description of plain words is kept.
_PLAIN_WORDS = re.compile(r"[A-Za-z][A-Za-z ,-]{0,80}")

OMITTED = "<omitted>"


class RedactFilter(logging.Filter):
    """Takes raw request data and object bodies out of records; drops the capped loggers' low levels
    even if something lowered those loggers' own levels again."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, floor in BODY_LOGGERS.items():
            if (record.name == name or record.name.startswith(name + ".")) and record.levelno < floor:
                return False
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            # aiohttp's "Error handling request": the traceback and the message quote the raw line.
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {http_error_summary(exc)}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        elif record.name.startswith("kopf") and isinstance(record.msg, str) and not record.args:
            match = _BODY_DUMPS.match(record.msg)
            if match:
                record.msg = match.group("head") + OMITTED
        return True


def http_error_summary(exc: HttpProcessingError) -> str:
    """``BadHttpMessage 400: Invalid header value char``: the kind of error, never the request's bytes."""
    first = str(exc.message or "").split("\n", 1)[0].strip().rstrip(":")
    described = f": {first}" if _PLAIN_WORDS.fullmatch(first) else ""
    return f"{type(exc).__name__} {exc.code}{described}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A record that passes its own logger's level reaches the handler whatever the root's level: a cap
    # must never be below the level asked for.
    for name, floor in BODY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
