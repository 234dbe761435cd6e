"""proxy.access_log.writer: buffering, flushing, logrotate's reopen, exit, and slow pipes.

No proxy here: AccessLogs is driven directly with LogRecords, as the worker will.
"""
import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

from proxy.access_log import writer
from proxy.access_log.record import LogRecord
from proxy.access_log.writer import (FLUSH_BYTES, AccessLogs, Sink, close_all, flush_all,
                                     reopen_all)
from proxy.config.model import AccessLogConfig, HttpConnectionManager, RouteConfiguration


@pytest.fixture(autouse=True)
def no_leftover_sinks():
    yield
    close_all()


def cfg(path, fmt="%REQ(:PATH)%\n", **kw) -> AccessLogConfig:
    return AccessLogConfig(logger="envoy.access_loggers.file", path=str(path), text_format=fmt,
                           **kw)


def rec(path=b"/x") -> LogRecord:
    return LogRecord(path=path, start_time=1460751420.310, response_code=200)


def read(path) -> str:
    with open(path) as f:
        return f.read()


# --- buffering and flushing --------------------------------------------------------------------

def test_lines_wait_in_memory_until_flush(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out)])
    logs.log(rec(b"/a"))
    logs.log(rec(b"/b"))
    assert out.exists() and read(out) == ""      # opened (created) at start, nothing written yet
    logs.flush()
    assert read(out) == "/a\n/b\n"
    logs.flush()                                  # nothing new: nothing written twice
    assert read(out) == "/a\n/b\n"


def test_a_full_buffer_is_written_without_waiting_for_the_flush(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out)])
    line = b"/" + b"x" * 1022                   # 1 KiB lines with their "\n"
    for _ in range(FLUSH_BYTES // 1024 - 1):
        logs.log(rec(line))
    assert read(out) == ""
    logs.log(rec(line))
    assert len(read(out)) == FLUSH_BYTES
    logs.log(rec(b"/after"))
    assert len(read(out)) == FLUSH_BYTES


def test_flush_on_interval_with_start(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out)])

    async def run():
        logs.start(asyncio.get_running_loop(), interval=0.05)
        logs.log(rec(b"/first"))
        assert read(out) == ""
        await asyncio.sleep(0.2)
        assert read(out) == "/first\n"
        logs.log(rec(b"/second"))
        await asyncio.sleep(0.2)
        assert read(out) == "/first\n/second\n"
        logs.close()                                # cancels the timer
    asyncio.run(run())


def test_close_flushes(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out)])
    logs.log(rec(b"/last"))
    logs.close()
    assert read(out) == "/last\n"
    logs.log(rec(b"/after-close"))                  # ignored, never raises
    assert read(out) == "/last\n"


def test_flush_all_and_close_all(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    one, two = AccessLogs([cfg(a)]), AccessLogs([cfg(b)])
    one.log(rec(b"/1"))
    two.log(rec(b"/2"))
    flush_all()
    assert (read(a), read(b)) == ("/1\n", "/2\n")
    one.log(rec(b"/3"))
    close_all()
    assert read(a) == "/1\n/3\n"


def test_the_file_is_opened_for_append(tmp_path):
    out = tmp_path / "access.log"
    out.write_text("previous run\n")
    logs = AccessLogs([cfg(out)])
    logs.log(rec(b"/new"))
    logs.close()
    assert read(out) == "previous run\n/new\n"


def test_a_file_that_cannot_be_opened_raises(tmp_path):
    with pytest.raises(OSError):
        AccessLogs([cfg(tmp_path / "missing-dir" / "a.log")])


# --- several logs ------------------------------------------------------------------------------

def test_two_logs_on_one_file_share_it_and_keep_the_order(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out, "A %REQ(:PATH)%\n"), cfg(out, "B %REQ(:PATH)%\n")])
    assert len(logs.sinks) == 1
    logs.log(rec(b"/1"))
    logs.log(rec(b"/2"))
    logs.close()
    assert read(out) == "A /1\nB /1\nA /2\nB /2\n"
    assert writer._SINKS == {}


def test_a_sink_shared_by_two_connection_managers_stays_open_until_both_close(tmp_path):
    out = tmp_path / "access.log"
    one, two = AccessLogs([cfg(out, "1\n")]), AccessLogs([cfg(out, "2\n")])
    assert one.sinks[0] is two.sinks[0]
    one.close()
    two.log(rec())
    two.flush()
    assert read(out) == "2\n"
    two.close()
    assert writer._SINKS == {}


def test_json_and_text_logs_side_by_side(tmp_path):
    text, js = tmp_path / "text.log", tmp_path / "json.log"
    logs = AccessLogs([cfg(text), AccessLogConfig(logger="envoy.access_loggers.file",
                                                  path=str(js),
                                                  json_format={"code": "%RESPONSE_CODE%"})])
    logs.log(rec(b"/j"))
    logs.close()
    assert (read(text), read(js)) == ("/j\n", '{"code":200}\n')


def test_for_hcm(tmp_path):
    out = tmp_path / "access.log"
    hcm = HttpConnectionManager(stat_prefix="x", route_config=RouteConfiguration("r", []))
    assert AccessLogs.for_hcm(hcm) is None
    hcm.access_logs = [cfg(out)]
    logs = AccessLogs.for_hcm(hcm)
    logs.log(rec(b"/hcm"))
    logs.close()
    assert read(out) == "/hcm\n"


def test_a_formatting_error_is_counted_not_raised(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out, "%REQ(X-A)% %REQ(:PATH)%\n")])
    broken = rec(b"/broken")
    broken.request_headers = lambda name: 1 / 0
    logs.log(broken)
    logs.log(rec(b"/fine"))
    logs.close()
    assert logs.errors == 1 and read(out) == "- /fine\n"


# --- logrotate ---------------------------------------------------------------------------------

def test_reopen_after_rename_writes_to_a_new_file(tmp_path):
    out, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    logs = AccessLogs([cfg(out)])
    logs.log(rec(b"/before"))
    logs.flush()
    os.rename(out, rotated)                 # logrotate moves the file...
    logs.log(rec(b"/buffered-at-rotation"))
    logs.reopen()                           # ...and sends SIGUSR1
    logs.log(rec(b"/after"))
    logs.close()
    # lines buffered before the reopen finish the old file; new ones start the new file
    assert read(rotated) == "/before\n/buffered-at-rotation\n"
    assert read(out) == "/after\n"


def test_reopen_all(tmp_path):
    out = tmp_path / "access.log"
    logs = AccessLogs([cfg(out)])
    os.rename(out, tmp_path / "old.log")
    reopen_all()
    logs.log(rec(b"/new"))
    logs.close()
    assert read(out) == "/new\n"


def test_reopen_keeps_the_old_file_if_the_path_cannot_be_opened(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    out = folder / "access.log"
    logs = AccessLogs([cfg(out)])
    os.rename(out, tmp_path / "kept.log")
    os.rmdir(folder)
    logs.reopen()                           # logged, not raised
    logs.log(rec(b"/still"))
    logs.close()
    assert read(tmp_path / "kept.log") == "/still\n"


def test_reopen_leaves_stdout_alone():
    sink = Sink("/dev/stdout")
    fd = sink.fd
    sink.reopen()
    assert sink.fd == fd
    sink.close()


# --- pipes: never block, whole lines -----------------------------------------------------------

def pipe_sink():
    r, w = os.pipe()
    sink = Sink(f"/proc/self/fd/{w}")       # our own O_NONBLOCK description of the pipe
    os.close(w)
    return r, sink


def drain(r) -> bytes:
    os.set_blocking(r, False)
    out = b""
    while True:
        try:
            chunk = os.read(r, 1 << 16)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_a_full_pipe_never_blocks_and_nothing_is_lost():
    r, sink = pipe_sink()
    lines = [b"line %06d %s\n" % (i, b"x" * 100) for i in range(4000)]    # ~450 KiB
    for line in lines:
        sink.append(line)                   # flushes at 64 KiB; the pipe fills up and stays full
    sink.flush()
    assert sink.stalled and sink.lines      # the rest waits in memory
    got = b""
    for _ in range(100):
        got += drain(r)
        sink.flush()
        if not sink.lines:
            break
    got += drain(r)
    sink.close()
    os.close(r)
    assert got == b"".join(lines) and sink.dropped == 0


def test_pipe_writes_are_whole_lines_of_at_most_pipe_buf():
    r, sink = pipe_sink()
    for i in range(200):
        sink.append(b"%d %s\n" % (i, b"y" * 97))
    sink.flush()
    sink.close()
    data = drain(r)
    os.close(r)
    assert sink.chunk == writer.PIPE_BUF
    assert data.count(b"\n") == 200


def test_backlog_limit_drops_new_lines(monkeypatch):
    monkeypatch.setattr(writer, "MAX_BACKLOG", 256 * 1024)
    r, sink = pipe_sink()
    line = b"z" * 1023 + b"\n"
    for _ in range(1024):                   # 1 MiB into a 64 KiB pipe, 256 KiB allowed to wait
        sink.append(line)
    assert sink.dropped > 0
    assert sink.size <= 256 * 1024
    sink.close(timeout=0)
    os.close(r)


def test_close_gives_a_slow_reader_a_moment_then_gives_up():
    r, sink = pipe_sink()
    for _ in range(200):
        sink.append(b"w" * 1023 + b"\n")    # 200 KiB, more than the pipe holds
    sink.close(timeout=0.05)
    assert sink.closed and sink.dropped > 0
    os.close(r)


# --- stdout / stderr ---------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from proxy.access_log.writer import AccessLogs
    from proxy.access_log.record import LogRecord
    from proxy.config.model import AccessLogConfig
    logs = AccessLogs([AccessLogConfig(logger="envoy.access_loggers.stdout", path="/dev/stdout",
                                       text_format="out %REQ(:PATH)%\\n"),
                       AccessLogConfig(logger="envoy.access_loggers.stderr", path="/dev/stderr",
                                       text_format="err %REQ(:PATH)%\\n")])
    print("before", flush=True)
    logs.log(LogRecord(path=b"/p"))
    logs.close()
    print("after", flush=True)
""")


def run_child(stdout, stderr):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", CHILD.format(root=root)], stdout=stdout,
                          stderr=stderr, timeout=20, check=True)


def test_stdout_and_stderr_loggers_write_to_fds_1_and_2_when_they_are_pipes():
    done = run_child(subprocess.PIPE, subprocess.PIPE)
    assert done.stdout == b"before\nout /p\nafter\n"
    assert done.stderr == b"err /p\n"


def test_stdout_redirected_to_a_file_shares_the_offset_with_other_output(tmp_path):
    out = tmp_path / "stdout.txt"
    with open(out, "wb") as f:              # like `cyvoy > stdout.txt` (not O_APPEND)
        run_child(f, subprocess.DEVNULL)
    assert read(out) == "before\nout /p\nafter\n"
