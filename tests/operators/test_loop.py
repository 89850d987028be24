"""The parameter server loop's decisions (operators/loop.py), without Flink."""

from operators.loop import (
    answer_to_wait,
    awaited_clock,
    duplicate_push,
    from_rolled_back_timeline,
    must_train,
    open_barrier,
    staleness,
    state_pieces,
)


def test_the_sync_barrier_applies_rounds_in_clock_order_whatever_the_arrival_order():
    held, next_clock, applied = {}, 0, []
    arrivals = [(1, "a"), (0, "b"), (2, "a"), (1, "b"), (0, "a"), (2, "b")]
    for clock, worker in arrivals:
        held = {**held, clock: {**held.get(clock, {}), worker: f"{worker}{clock}"}}
        ready, held, next_clock = open_barrier(held, next_clock, workers=2)
        applied += [(c, sorted(pushes.values())) for c, pushes in ready]
    assert applied == [(0, ["a0", "b0"]), (1, ["a1", "b1"]), (2, ["a2", "b2"])]
    assert held == {} and next_clock == 3


def test_the_barrier_does_not_change_what_it_is_given():
    held = {0: {"a": 1, "b": 2}}
    open_barrier(held, 0, workers=2)
    assert held == {0: {"a": 1, "b": 2}}


def test_a_shard_announces_the_awaited_clock_once_and_the_late_worker_answers():
    held = {4: {"a": "push"}}
    assert awaited_clock(held, 4, announced=3) == 4
    assert awaited_clock(held, 4, announced=4) is None
    # worker b is at clock 4: it trains its partial mini-batch, or pushes an empty one
    assert answer_to_wait(4, 4, buffered=7) == "train"
    assert answer_to_wait(4, 4, buffered=0) == "empty"
    # worker a pushed 4 already (its clock is 5): the announcement is not for it
    assert answer_to_wait(5, 4, buffered=0) is None


def test_after_a_restore_updates_of_the_lost_timeline_are_ignored_and_pushes_not_reapplied():
    # the worker had pushed clocks 0-9; it restarts from a checkpoint taken at clock 6
    clock = 6
    assert not from_rolled_back_timeline(reflected=5, clock=clock)  # pushes 0-5: kept
    assert from_rolled_back_timeline(reflected=8, clock=clock)  # reflects 6-8 of the lost run
    # the shard's checkpoint had applied up to 7: the re-sent 6 and 7 are skipped, 8 applied
    assert [duplicate_push(c, last_applied=7) for c in (6, 7, 8)] == [True, True, False]


def test_a_worker_trains_whole_mini_batches_and_partial_ones_only_when_flushed():
    assert [must_train(n, 100, flush=False) for n in (0, 99, 100, 250)] == [
        False,
        False,
        True,
        True,
    ]
    assert [must_train(n, 100, flush=True) for n in (0, 1)] == [False, True]


def test_state_pieces_cover_the_examples_in_order_and_bound_each_entry():
    for count in (0, 1, 255, 256, 257, 10_000):
        pieces = state_pieces(count, 256)
        covered = [i for start, stop in pieces for i in range(start, stop)]
        assert covered == list(range(count))
        assert all(0 < stop - start <= 256 for start, stop in pieces)


def test_staleness_counts_my_batches_the_slowest_shard_has_not_applied():
    assert staleness(5, [4, 4, 4, 4]) == 0  # sync: every earlier batch applied everywhere
    assert staleness(5, [4, 4, 1, 4]) == 3  # one shard behind by batches 2, 3 and 4
    assert staleness(16, [-1, -1]) == 16  # at the flow-control limit, nothing heard back
    # async: while a worker trains a run of batches, each one is one staler
    assert [staleness(c, [2, 3]) for c in (5, 6, 7)] == [2, 3, 4]
