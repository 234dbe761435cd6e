"""proxy._fastpath.tokenbucket: the local rate limit's token buckets in shared memory."""
import os

from proxy._fastpath.tokenbucket import SharedCounters, SharedTokenBuckets


def test_bucket_starts_full_and_empties():
    b = SharedTokenBuckets(1)
    b.configure(0, 3, 3, 1.0)
    assert [b.consume(0) for _ in range(4)] == [True, True, True, False]


def test_each_begun_fill_interval_credits_tokens_per_fill_up_to_max():
    b = SharedTokenBuckets(1)
    b.configure(0, 5, 2, 1.0)
    t0 = b.base_ns(0)
    assert sum(b.consume_at(0, t0) for _ in range(6)) == 5
    assert sum(b.consume_at(0, t0 + 999_000_000) for _ in range(3)) == 0      # interval not over
    assert sum(b.consume_at(0, t0 + 1_000_000_000) for _ in range(3)) == 2    # one fill
    assert sum(b.consume_at(0, t0 + 60_000_000_000) for _ in range(9)) == 5   # capped at max


def test_an_unconfigured_bucket_never_gives_a_token():
    assert SharedTokenBuckets(2).consume(1) is False


def test_forked_processes_share_one_bucket():
    b = SharedTokenBuckets(1)
    b.configure(0, 100, 100, 3600.0)
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            taken = sum(b.consume(0) for _ in range(40))
            os._exit(taken)
        pids.append(pid)
    taken = sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
    assert taken == 100 and b.consume(0) is False


def test_shared_counter_acquire_stops_at_the_limit():
    c = SharedCounters(1)
    assert [c.acquire(0, 2) for _ in range(3)] == [True, True, False]
    c.release(0)
    assert c.value(0) == 1
