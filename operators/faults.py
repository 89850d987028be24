"""Test-only failure injection (the hidden ``--inject-failure MARKER`` flag of ``train``,
``validate`` and ``serve``): an operator throws once, after the job's first completed
checkpoint, so a test can check what a restart from that checkpoint keeps, loses and repeats.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> fault = FailOnce(str(root / "fired"), f"file://{root}/ckpt", after=2)
>>> fault.tick(), fault.tick()  # no checkpoint yet: nothing happens
(None, None)
>>> (root / "ckpt" / "job" / "chk-1").mkdir(parents=True)
>>> (root / "ckpt" / "job" / "chk-1" / "_metadata").write_text("")
0
>>> fault.tick()
Traceback (most recent call last):
...
RuntimeError: injected failure (--inject-failure), once
>>> fault.tick()  # the marker records that it fired: never again, also after the restart
"""

from __future__ import annotations

import os
import time


class FailOnce:
    """Raise once from ``tick`` when it has been called ``after`` times and a checkpoint
    under ``checkpoint_dir`` is complete; the file ``marker`` records that it fired.
    ``settle_s``: how long to wait before raising, so that the records the operator already
    handed to a Kafka sink leave its producer (which sends them from a thread of its own)."""

    def __init__(
        self, marker: str | None, checkpoint_dir: str | None, after: int = 50, settle_s: float = 0
    ):
        self.marker, self.checkpoint_dir, self.after, self.seen = marker, checkpoint_dir, after, 0
        self.settle_s = settle_s

    def tick(self) -> None:
        if not self.marker:
            return
        self.seen += 1
        if self.seen < self.after or os.path.exists(self.marker):
            return
        if completed_checkpoint(self.checkpoint_dir):
            with open(self.marker, "w") as out:
                out.write(str(time.time()))
            time.sleep(self.settle_s)
            raise RuntimeError("injected failure (--inject-failure), once")


def completed_checkpoint(uri: str | None) -> bool:
    """Whether a checkpoint under ``uri`` (``file://`` or a path) has its ``_metadata``."""
    if not uri:
        return False
    root = uri.removeprefix("file://")
    for dirpath, _, files in os.walk(root):
        if "_metadata" in files and os.path.basename(dirpath).startswith("chk-"):
            return True
    return False
