"""What the PyFlink adapters share about Flink itself: the record type of pickled values, the
side outputs, and keyed state opened by name.

Every keyed state's name is a module-level constant of the adapter that owns it, used only
through these openers: the names are in every checkpoint and savepoint, so renaming one loses
that state on restore.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

PICKLED = Types.PICKLED_BYTE_ARRAY()
LONG, BOOLEAN = Types.LONG(), Types.BOOLEAN()

# the one dead-letter output of every job's Python steps (to the dead-letters topic)
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
COUNTS = OutputTag("counts", PICKLED)  # counters, for the evaluator
PREDICTIONS = OutputTag("predictions", PICKLED)  # a mini-batch's scores, for the evaluator
PUSHES = OutputTag("pushes", PICKLED)  # a worker's gradients, for the shards
DIGESTS = OutputTag("digests", Types.STRING())  # state digests (--digest-topic)


def value_state(ctx, name: str, kind=PICKLED):
    """The keyed value state ``name`` (``kind``: its Flink type; pickled by default)."""
    return ctx.get_state(ValueStateDescriptor(name, kind))


def list_state(ctx, name: str):
    """The keyed list state ``name`` of pickled entries."""
    return ctx.get_list_state(ListStateDescriptor(name, PICKLED))


def map_state(ctx, name: str):
    """The keyed map state ``name``: integer keys (block or chunk numbers), pickled values."""
    return ctx.get_map_state(MapStateDescriptor(name, Types.LONG(), PICKLED))
