"""The dead-letter record: the raw payload, where it came from, and why it was refused."""

from __future__ import annotations

import base64
import json
import time


def dead_letter(
    payload: bytes | str,
    reason: str,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    step: str = "decode",
    now_ms: int | None = None,
    run: str | None = None,
    index: int | None = None,
) -> str:
    """Encode one dead letter as JSON.

    ``payload`` is kept whole, so the record can be fixed and replayed: as text, and where the
    bytes are not UTF-8 also exactly, as ``payload_base64`` (the text then escapes them);
    ``null`` for a tombstone. ``partition``/``offset`` are ``null`` where the reader
    does not know them. ``run`` names the job run that refused it, where one is known.

    Examples
    --------
    >>> doc = json.loads(dead_letter("{oops", "invalid JSON", topic="events", now_ms=1))
    >>> doc["reason"], doc["payload"], doc["offset"]
    ('invalid JSON', '{oops', None)
    >>> json.loads(dead_letter(b"{\\xff}", "not UTF-8", now_ms=1))["payload_base64"]
    'e/99'
    """
    exact = None
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            exact = base64.b64encode(payload).decode("ascii")
            payload = payload.decode("utf-8", "backslashreplace")
    doc = {
        "reason": reason,
        "step": step,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "time": int(time.time() * 1000) if now_ms is None else now_ms,
        "payload": payload,
        "run": run,
    }
    if exact is not None:
        doc["payload_base64"] = exact
    if index is not None:
        doc["index"] = index
    return json.dumps(doc, separators=(",", ":"))
