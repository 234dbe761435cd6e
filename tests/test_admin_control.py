"""proxy.admin.control.Control: the shared control block between master, admin and workers."""
from __future__ import annotations

import logging
import os
import time

import pytest

from proxy.admin import control as cm
from proxy.admin.control import Control


def _in_child(fn) -> int:
    """Run fn() in a forked child; its return value (a small int) is the exit code."""
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        code = 99
        try:
            code = int(fn())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status)


def test_defaults():
    c = Control({"concurrency": 3, "log_level": "warn"}, config_path="/x.yaml")
    assert c.master_pid == os.getpid()
    assert abs(c.start_time - time.time()) < 5
    assert c.state() == "PRE_INITIALIZING" and c.server_state() == "PRE_INITIALIZING"
    assert c.concurrency() == 3
    assert c.log_level() == "warning"
    assert c.worker_pids() == []
    assert c.last_reload_error() is None
    assert not c.healthcheck_failed()
    assert c.config_path == "/x.yaml" and c.options["concurrency"] == 3
    assert c.version.startswith("cyvoy/")


def test_layout_is_aligned_and_fixed():
    for name in ("magic", "seq", "start_time"):
        assert cm.LAYOUT[name] % 8 == 0
    for name in ("state", "master_pid", "concurrency", "healthcheck_failed", "log_level",
                 "n_workers", "reload_error_len", "reload_error_set", "workers"):
        assert cm.LAYOUT[name] % 4 == 0
    assert cm.LAYOUT["workers"] == 64
    assert cm.SIZE == 64 + 4 * cm.MAX_WORKERS + cm.MAX_ERROR


def test_master_writes_are_seen_by_a_forked_child():
    c = Control()
    c.set_state("LIVE")
    c.set_workers([101, 102, 103])
    c.set_reload_error("clusters[0]: bad")
    c.set_concurrency(3)
    ok = _in_child(lambda: c.state() == "LIVE" and c.worker_pids() == [101, 102, 103]
                   and c.last_reload_error() == "clusters[0]: bad" and c.concurrency() == 3)
    assert ok == 1


def test_child_writes_are_seen_by_the_parent():
    c = Control()
    assert _in_child(lambda: (c.set_healthcheck_failed(True), c.set_log_level("debug"), 0)[-1]) == 0
    assert c.healthcheck_failed() and c.log_level() == "debug"


def test_changes_after_fork_reach_the_child():
    c = Control()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        os.close(w)
        os.read(r, 1)        # wait for the parent's writes
        os._exit(0 if c.state() == "DRAINING" and c.worker_pids() == [7] else 1)
    os.close(r)
    c.set_state("DRAINING")
    c.set_workers([7])
    os.write(w, b"x")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_healthcheck_fail_makes_live_report_draining():
    c = Control()
    c.set_state("LIVE")
    c.set_healthcheck_failed(True)
    assert c.state() == "LIVE" and c.server_state() == "DRAINING"
    c.set_healthcheck_failed(False)
    assert c.server_state() == "LIVE"
    c.set_state("INITIALIZING")
    c.set_healthcheck_failed(True)
    assert c.server_state() == "INITIALIZING"


def test_bad_values_are_refused():
    c = Control()
    with pytest.raises(ValueError):
        c.set_state("RUNNING")
    with pytest.raises(ValueError):
        c.set_log_level("loud")
    c.set_state("live")
    assert c.state() == "LIVE"


def test_reload_error_is_cut_on_a_character_boundary():
    c = Control()
    c.set_reload_error("é" * cm.MAX_ERROR)          # 2 bytes each
    err = c.last_reload_error()
    assert err == "é" * (cm.MAX_ERROR // 2)
    c.set_reload_error("")
    assert c.last_reload_error() == ""             # an empty error is still an error
    c.set_reload_error(None)
    assert c.last_reload_error() is None


def test_worker_list_is_capped_and_replaced():
    c = Control()
    c.set_workers(range(1, cm.MAX_WORKERS + 10))
    assert len(c.worker_pids()) == cm.MAX_WORKERS
    c.set_workers([5, 6])
    assert c.worker_pids() == [5, 6]


def test_a_reader_waits_out_a_half_written_update():
    c = Control()
    c.set_workers([1, 2])
    c._b.seq += 1        # a writer in the middle of an update ...
    c._b.workers[0] = 9
    reads = []

    def finish():
        c._b.n_workers = 1
        c._b.seq += 1
    import threading
    t = threading.Timer(0.02, finish)
    t.start()
    reads.append(c.worker_pids())     # ... is not read until it is published
    t.join()
    assert reads == [[9]]


def test_apply_log_level_sets_the_root_logger_once_per_change():
    c = Control({"log_level": "info"})
    root = logging.getLogger()
    old = root.level
    try:
        assert c.apply_log_level() is True
        assert root.level == logging.INFO
        assert c.apply_log_level() is False
        c.set_log_level("trace")
        assert c.apply_log_level() is True and root.level == 5
        c.set_log_level("off")
        c.apply_log_level()
        assert root.level > logging.CRITICAL
    finally:
        root.setLevel(old)


def test_attach_to_an_existing_block():
    c = Control(master_pid=4242, start_time=1000.0)
    c.set_state("LIVE")
    d = Control(buffer=c.buffer)
    assert d.master_pid == 4242 and d.start_time == 1000.0 and d.state() == "LIVE"
