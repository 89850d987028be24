from connectors.ingest import offset_filter


def test_offset_filter_keeps_each_partition_below_its_end_offset():
    assert offset_filter({1: 480, 0: 500}) == (
        "WHERE (part = 0 AND off < 500) OR (part = 1 AND off < 480)"
    )


def test_offset_filter_of_an_unbounded_run_keeps_everything():
    assert offset_filter(None) == ""


def test_offset_filter_with_no_partitions_keeps_nothing():
    assert offset_filter({}) == "WHERE FALSE"
