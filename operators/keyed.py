"""What the PyFlink adapters share about Flink itself: the record type of pickled values, the
side outputs, records that carry their key, and keyed state opened by name.

Every keyed state's name is a module-level constant of the adapter that owns it, used only
through these openers: the names are in every checkpoint and savepoint, so renaming one loses
that state on restore.
"""

from __future__ import annotations

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

PICKLED = Types.PICKLED_BYTE_ARRAY()
LONG, BOOLEAN = Types.LONG(), Types.BOOLEAN()
# a record with the key of the step it goes to: ``Row(key, value)``, see ``keyed``
KEYED = Types.ROW([Types.STRING(), PICKLED])

# the one dead-letter output of every job's Python steps (to the dead-letters topic)
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
COUNTS = OutputTag("counts", KEYED)  # counters, for the evaluator
PREDICTIONS = OutputTag("predictions", KEYED)  # a mini-batch's scores, for the evaluator
PUSHES = OutputTag("pushes", KEYED)  # a worker's gradients, for the shards
DIGESTS = OutputTag("digests", Types.STRING())  # state digests (--digest-topic)


def with_key(record) -> Row:
    """``record`` (any record with a ``key``) as the ``KEYED`` row that carries it."""
    return Row(record.key, record)


def keyed(stream):
    """The ``KEYED`` records of ``stream`` keyed by their key, in Java.

    PyFlink's ``key_by`` puts a Python step in front of the keyed one, which unpickles every
    record to call the key selector and pickles it again with its key: a call through the
    bridge and two pickles per record, under the interpreter's lock. A record that already
    carries its key (``with_key``) is keyed here as ``key_by`` keys the rows its step makes
    (``pyflink.datastream.data_stream.DataStream.key_by``), and the keyed step gets the
    record itself.
    """
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway

    key_type = Types.ROW([Types.STRING()]).get_java_type_info()
    j_keyed = stream._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(), key_type)
    return KeyedStream(j_keyed, PICKLED, stream)


def side_output(stream, tag: OutputTag):
    """The records ``stream``'s steps emit to ``tag``, as Java has them.

    PyFlink's ``get_side_output`` adds a Python identity map behind every side output
    (``pyflink.datastream.data_stream.DataStream.get_side_output``): each record goes back
    into Python, is unpickled and pickled again, and the map joins the task's chain, which
    then holds two of the interpreter's thread states on one Java thread (see
    ``flink_jobs/thread_boot/sitecustomize.py``). The tag's type already tells Java what the
    records are.
    """
    from pyflink.datastream import DataStream

    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def value_state(ctx, name: str, kind=PICKLED):
    """The keyed value state ``name`` (``kind``: its Flink type; pickled by default)."""
    return ctx.get_state(ValueStateDescriptor(name, kind))


def list_state(ctx, name: str):
    """The keyed list state ``name`` of pickled entries."""
    return ctx.get_list_state(ListStateDescriptor(name, PICKLED))


def map_state(ctx, name: str):
    """The keyed map state ``name``: integer keys (block or chunk numbers), pickled values."""
    return ctx.get_map_state(MapStateDescriptor(name, Types.LONG(), PICKLED))
