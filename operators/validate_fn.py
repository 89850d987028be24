"""The PyFlink adapter of the event codec: valid events downstream, bad ones to a side output."""

from __future__ import annotations

from pyflink.datastream import ProcessFunction

from operators.faults import FailOnce
from operators.heap import freeze_startup_heap
from operators.keyed import DEAD_LETTERS
from operators.parsing import parse_batch


class ValidateFunction(ProcessFunction):
    """Emit each valid event of ``Row(line, partition, offset)`` as normalized JSON; route
    each bad one to ``DEAD_LETTERS`` with where it came from.

    Never raises on input: whatever arrives ends in exactly one of the two outputs.
    """

    def __init__(
        self,
        source_topic: str,
        require_label: bool = True,
        fail_marker: str | None = None,
        checkpoint_dir: str | None = None,
    ):
        self.source_topic = source_topic
        self.require_label = require_label
        self.fault = FailOnce(fail_marker, checkpoint_dir)  # tests only: --inject-failure

    def open(self, runtime_context) -> None:
        metrics = runtime_context.get_metrics_group()
        self.valid_count = metrics.counter("valid_events")
        self.dead_count = metrics.counter("dead_letters")
        freeze_startup_heap()

    def process_element(self, value, ctx):
        self.fault.tick()
        line, partition, offset = value  # Row(line bytes | None, partition, offset)
        parsed = parse_batch([line], [(partition, offset, None)], require_label=self.require_label)
        for rejected in parsed.rejected:
            self.dead_count.inc()
            yield DEAD_LETTERS, rejected.letter(self.source_topic)
        for event in parsed.events:
            self.valid_count.inc()
            yield event.to_json()
