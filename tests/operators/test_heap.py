"""The start-up heap leaves the cyclic collector's reach (pure, no JVM)."""

import gc

from operators.heap import freeze_startup_heap


def test_freezing_moves_the_live_objects_out_of_full_collections():
    gc.unfreeze()
    before = len(gc.get_objects(generation=2)) + len(gc.get_objects(generation=1))
    try:
        frozen = freeze_startup_heap()
        assert frozen >= before > 1000  # this process's modules, at least
        assert len(gc.get_objects(generation=2)) < before / 10  # what full collections walk
    finally:
        gc.unfreeze()
