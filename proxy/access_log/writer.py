"""Where access log lines go: buffered sinks that never block the event loop, and `AccessLogs`,
the per-HTTP-connection-manager object the worker calls.

    logs = AccessLogs.for_hcm(hcm_cfg)     # None when the HCM has no access_log
    logs.log(record)                       # per request: format + append to the sink's buffer
    logs.log_request(line_fn, record_fn)   # the same, from the connection manager (see there)
    logs.flush()                           # about once a second (the worker's ticker), or start()
    logs.reopen()                          # SIGUSR1, after logrotate renamed the files
    logs.close()                           # at exit: flushes what is buffered

Decisions:

* Buffering. A line is appended to its sink's in-memory buffer; the buffer is written when it
  reaches FLUSH_BYTES (64 KiB), on `flush()` (the worker calls it about once a second, or
  `start(loop)` schedules it with loop.call_later) and on `close()`. A line is therefore on disk
  at most about a second after its request ended, as with Envoy's periodic file flushing.
* No thread. Files are opened O_APPEND and written synchronously from the event loop, one
  write(2) per batch: a regular file write lands in the page cache and costs microseconds, and
  one batched write a second is cheaper than handing lines to a thread (no locks, nothing to
  restart after fork()). Pipes, terminals and other character devices (/dev/stdout under a
  container runtime, systemd, a pager...) can block on a slow reader, so they are written
  non-blocking: cyvoy opens its own file description on them (/proc/self/fd/N, so O_NONBLOCK
  does not leak to the other processes sharing fd 1/2), and a socket on fd 1/2 (journald) is
  sent to with MSG_DONTWAIT. What the reader does not take stays buffered and is retried on the
  next flush; past MAX_BACKLOG (16 MiB) new lines are dropped and counted (`dropped`), never
  waited for. If that private description cannot be opened, fd 1/2 is written directly (may
  block; logged once).
* Whole lines. Several worker processes write to the same file or pipe. A batch is only ever
  whole lines, so with O_APPEND (files) or writes of at most PIPE_BUF bytes (pipes, cut at line
  boundaries) lines of different workers never interleave mid-line.
* /dev/stdout, /dev/stderr (FileAccessLog.path) and the stdout/stderr loggers write to fds 1/2.
  If fd 1/2 is a regular file (`cyvoy > log`) it is written through the inherited descriptor,
  sharing its offset with the master's own output rather than overwriting it.
* reopen() flushes, opens the path again (creating the file logrotate just moved away) and
  closes the old descriptor; fds 1/2 are left alone. Sinks are shared per path within a process
  (two access logs on one file keep their relative order); they are never shared across fork().
"""
from __future__ import annotations

import logging
import os
import select
import socket
import stat
import time
from typing import Any, Callable, Optional

from proxy.access_log.format import formatter_for, is_default_format

log = logging.getLogger("cyvoy.access_log")

FLUSH_BYTES = 64 * 1024           # a buffer this big is written at once
FLUSH_INTERVAL = 1.0              # seconds, for start()
MAX_BACKLOG = 16 * 1024 * 1024    # bytes waiting for a slow pipe before lines are dropped
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
CLOSE_TIMEOUT = 1.0               # how long close() waits for a slow pipe to take the rest
_ERROR_EVERY = 10.0               # seconds between two reports of a sink's write errors

STD_PATHS = {"/dev/stdout": 1, "/dev/stderr": 2}
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK


class Sink:
    """One destination: a file path, or fd 1 / fd 2. Holds the buffered lines."""

    def __init__(self, path: str):
        self.path = path
        self.std = STD_PATHS.get(path)      # 1 / 2 for the standard streams, else None
        self.lines: list[bytes] = []
        self.size = 0                       # bytes in `lines`
        self.stalled = False                # the last write would have blocked
        self.dropped = 0                    # lines lost (backlog full, write errors, close)
        self.refs = 0
        self.closed = False
        self._last_error = 0.0
        self.fd = -1
        self.sock: Optional[socket.socket] = None
        self.owned = True                   # close self.fd on close()
        self.chunk: Optional[int] = None    # largest write, cut at line ends (None: one write)
        self._open()

    # ---- opening ------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.std is not None:
            self._open_std(self.std)
            return
        fd = os.open(self.path, _FILE_FLAGS, 0o644)
        self._use_fd(fd, True)

    def _use_fd(self, fd: int, owned: bool) -> None:
        self.fd = fd
        self.owned = owned
        self.sock = None
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self.chunk = None if regular else PIPE_BUF

    def _open_std(self, n: int) -> None:
        mode = os.fstat(n).st_mode
        if stat.S_ISREG(mode):
            self._use_fd(n, False)
            return
        if stat.S_ISSOCK(mode):
            self.sock = socket.socket(fileno=os.dup(n))
            self.fd = self.sock.fileno()
            self.owned = True
            self.chunk = PIPE_BUF
            return
        try:
            # our own description of the same pipe/tty, so O_NONBLOCK stays ours
            fd = os.open(f"/proc/self/fd/{n}", os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK
                         | os.O_NOCTTY)
        except OSError as e:
            log.warning("access log to %s: cannot open a non-blocking descriptor (%s); writing "
                        "to fd %d directly, which may block if its reader is slow",
                        self.path, e.strerror, n)
            self._use_fd(n, False)
            return
        self._use_fd(fd, True)

    # ---- writing ------------------------------------------------------------------------------
    def append(self, line: bytes) -> None:
        size = self.size + len(line)
        if size > MAX_BACKLOG or self.closed:
            self.dropped += 1
            if not self.closed:
                self._report(f"{MAX_BACKLOG} bytes are waiting for a slow reader; dropping lines")
            return
        self.lines.append(line)
        self.size = size
        if size >= FLUSH_BYTES and not self.stalled:
            self.flush()

    def _write(self, data: bytes) -> int:
        if self.sock is not None:
            return self.sock.send(data, socket.MSG_DONTWAIT)
        return os.write(self.fd, data)

    def flush(self) -> None:
        """Write what is buffered, without blocking: what a pipe does not take now stays."""
        lines = self.lines
        if not lines or self.closed:
            return
        n = len(lines)
        limit = self.chunk
        left: list[bytes] = []
        i = 0
        while i < n:
            if limit is None:
                j = n
                chunk = lines[0] if n == 1 else b"".join(lines[i:])
            else:
                size = len(lines[i])
                j = i + 1
                while j < n and size + len(lines[j]) <= limit:
                    size += len(lines[j])
                    j += 1
                chunk = lines[i] if j == i + 1 else b"".join(lines[i:j])
            try:
                written = self._write(chunk)
            except BlockingIOError:
                left = lines[i:]
                break
            except InterruptedError:
                continue
            except OSError as e:
                self.dropped += n - i
                self._report(f"write failed ({e.strerror or e}); {n - i} lines lost")
                break
            if written < len(chunk):
                # a partial write (a pipe taking part of a long line, a full disk): keep the rest
                left = [chunk[written:]] + lines[j:]
                break
            i = j
        self.lines = left
        self.size = sum(map(len, left)) if left else 0
        self.stalled = bool(left)

    def _report(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_error >= _ERROR_EVERY:
            self._last_error = now
            log.error("access log %s: %s (%d lines dropped so far)", self.path, what,
                      self.dropped)

    # ---- rotation and exit --------------------------------------------------------------------
    def reopen(self) -> None:
        """After logrotate moved the file: write what is buffered to the old file, then open the
        path again. fds 1/2 are not reopened."""
        self.flush()
        if self.std is not None or self.closed:
            return
        try:
            fd = os.open(self.path, _FILE_FLAGS, 0o644)
        except OSError as e:
            self._report(f"cannot reopen ({e.strerror}); still writing to the old file")
            return
        old, owned = self.fd, self.owned
        self._use_fd(fd, True)
        if owned:
            os.close(old)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Flush, waiting up to `timeout` seconds for a slow pipe, then close."""
        if self.closed:
            return
        self.flush()
        deadline = time.monotonic() + timeout
        while self.lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                select.select([], [self.fd], [], remaining)
            except (OSError, ValueError):
                break
            self.flush()
        if self.lines:
            self.dropped += len(self.lines)
            log.error("access log %s: %d lines not written at exit", self.path, len(self.lines))
            self.lines = []
            self.size = 0
        self.closed = True
        if self.sock is not None:
            self.sock.close()
        elif self.owned:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1


# Sinks of this process, by (pid, path): shared by the access logs writing to one path, never
# inherited across fork() (a child opens its own).
_SINKS: dict[tuple[int, str], Sink] = {}


def sink_path(path: str) -> str:
    return path if path in STD_PATHS else os.path.abspath(path)


def _acquire(path: str) -> Sink:
    key = (os.getpid(), sink_path(path))
    sink = _SINKS.get(key)
    if sink is None or sink.closed:
        sink = _SINKS[key] = Sink(key[1])
    sink.refs += 1
    return sink


def _release(sink: Sink) -> None:
    sink.refs -= 1
    if sink.refs <= 0:
        sink.close()
        key = (os.getpid(), sink.path)
        if _SINKS.get(key) is sink:
            del _SINKS[key]


def _sinks() -> list[Sink]:
    pid = os.getpid()
    return [s for (p, _), s in list(_SINKS.items()) if p == pid]


def flush_all() -> None:
    """Flush every sink of this process."""
    for s in _sinks():
        s.flush()


def reopen_all() -> None:
    """Reopen every file sink of this process (SIGUSR1)."""
    for s in _sinks():
        s.reopen()


def close_all() -> None:
    """Flush and close every sink of this process (exit)."""
    for key, s in list(_SINKS.items()):
        if key[0] == os.getpid():
            s.close()
            del _SINKS[key]


class AccessLogs:
    """The access logs of one http_connection_manager: (formatter, sink) pairs in config order."""
    __slots__ = ("entries", "defaults", "all_default", "appends", "sinks", "errors", "_held",
                 "_timer", "_last_error")

    def __init__(self, configs: list):
        entries: list[tuple[Callable[[Any], bytes], Callable[[bytes], None]]] = []
        defaults: list[bool] = []
        sinks: list[Sink] = []
        try:
            for cfg in configs:
                fmt = formatter_for(cfg)
                sink = _acquire(cfg.path)
                sinks.append(sink)
                entries.append((fmt, sink.append))
                defaults.append(is_default_format(cfg))
        except BaseException:
            for s in sinks:
                _release(s)
            raise
        self.entries = tuple(entries)
        # per entry: Envoy's default format, which the connection manager formats in C
        # (proxy/_fastpath/accesslog.pyx) without building a LogRecord
        self.defaults = tuple(defaults)
        self.all_default = all(defaults)
        self.appends = tuple(append for _, append in entries)
        self.sinks = tuple(dict.fromkeys(sinks))    # each once, for flush/reopen
        self._held = sinks                          # one reference per entry, for close
        self.errors = 0
        self._timer = None
        self._last_error = 0.0

    @classmethod
    def for_hcm(cls, hcm_cfg) -> Optional["AccessLogs"]:
        """The access logs of a model.HttpConnectionManager, or None when it has none. Opens
        (creates) the files: raises OSError if one cannot be opened."""
        configs = getattr(hcm_cfg, "access_logs", None)
        return cls(configs) if configs else None

    def log(self, record) -> None:
        """Format `record` for each access log and buffer the lines. Never raises."""
        for fmt, append in self.entries:
            try:
                append(fmt(record))
            except Exception:
                self.error()

    def log_request(self, line_fn: Callable[[], bytes], record_fn: Callable[[], Any]) -> None:
        """As log(), for a request the connection manager describes two ways: `line_fn()` gives
        its line in Envoy's default format, `record_fn()` its LogRecord for the other formats.
        Each is called at most once, and only if an entry needs it. Never raises."""
        line = record = None
        for (fmt, append), default in zip(self.entries, self.defaults):
            try:
                if default:
                    if line is None:
                        line = line_fn()
                    append(line)
                else:
                    if record is None:
                        record = record_fn()
                    append(fmt(record))
            except Exception:
                self.error()

    def error(self) -> None:
        """Count (and now and then report) an access log line that could not be made; called
        from an except block."""
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error >= _ERROR_EVERY:
            self._last_error = now
            log.exception("access log: cannot format a request (%d errors so far)", self.errors)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def reopen(self) -> None:
        for s in self.sinks:
            s.reopen()

    def close(self) -> None:
        """Flush and release the sinks (closed when no other access log uses them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held, self.sinks, self.entries = self._held, [], (), ()
        for s in held:
            _release(s)

    def start(self, loop, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every `interval` seconds on `loop` (instead of the worker's ticker)."""
        def tick():
            self.flush()
            if self.sinks:
                self._timer = loop.call_later(interval, tick)
        self._timer = loop.call_later(interval, tick)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sinks)
