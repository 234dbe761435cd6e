"""The master <-> admin <-> workers control block: a few words of shared memory.

One anonymous ``mmap(-1, SIZE, MAP_SHARED)`` made by the master before it forks anything, so
the workers, the health-check process and the admin process all inherit the same pages (the
same pattern as the host table, docs/host-table.md). No pipe, no socket, no lock.

Who writes what (one writer per field):

    master   state, concurrency, worker pids, last reload error
    admin    healthcheck-failed flag, log level   (POST /healthcheck/fail|ok, POST /logging)
    workers  nothing; they read healthcheck_failed() and apply_log_level() on their 1 s tick

Every scalar is one naturally aligned 32- or 64-bit word, read and written whole through
ctypes (one load / one store), so a reader never sees half a value. The two variable-size
fields (the worker pid list and the reload error text) sit behind a sequence counter written
only by the master (a seqlock): the writer makes it odd, writes, makes it even; a reader
retries while it is odd or changed under it.

Layout (little-endian, offsets in bytes; ``LAYOUT`` below is the authority):

      0 u64 magic 'CYVADMC1'        8 u32 version        12 u32 state (STATES code)
     16 u32 master_pid             20 u32 concurrency    24 u32 healthcheck_failed (0/1)
     28 u32 log_level (LEVELS idx) 32 f64 start_time (epoch seconds, set once)
     40 u64 seq (seqlock over what follows)
     48 u32 n_workers              52 u32 reload_error_len (bytes)
     56 u32 reload_error_set (0 = no error)               60 u32 pad
     64 u32 workers[MAX_WORKERS]
        u8  reload_error[MAX_ERROR] (UTF-8, cut at MAX_ERROR bytes on a character boundary)
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os
import time
from typing import Any, Iterable, Optional

MAGIC = int.from_bytes(b"CYVADMC1", "little")
VERSION = 1
MAX_WORKERS = 1024
MAX_ERROR = 4096
READ_WAIT_S = 0.2

# Envoy's admin.v3.ServerInfo.State values, with Envoy's numbers (also the server.state gauge).
STATES = {"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2, "INITIALIZING": 3}
STATE_NAMES = {v: k for k, v in STATES.items()}

# Envoy's log level names (spdlog's), in order; "warn" is accepted as "warning".
LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
_LEVEL_ALIASES = {"warn": "warning", "err": "error"}


class _Block(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint64),
        ("version", ctypes.c_uint32),
        ("state", ctypes.c_uint32),
        ("master_pid", ctypes.c_uint32),
        ("concurrency", ctypes.c_uint32),
        ("healthcheck_failed", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32),
        ("start_time", ctypes.c_double),
        ("seq", ctypes.c_uint64),
        ("n_workers", ctypes.c_uint32),
        ("reload_error_len", ctypes.c_uint32),
        ("reload_error_set", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("workers", ctypes.c_uint32 * MAX_WORKERS),
        ("reload_error", ctypes.c_ubyte * MAX_ERROR),
    ]


SIZE = ctypes.sizeof(_Block)
LAYOUT = {name: getattr(_Block, name).offset for name, _ in _Block._fields_}


def level_name(name: str) -> str:
    """Envoy's level name for `name` (case-insensitive, 'warn' -> 'warning'); ValueError if unknown."""
    n = str(name).strip().lower()
    n = _LEVEL_ALIASES.get(n, n)
    if n not in LEVELS:
        raise ValueError(f"unknown log level {name!r} (one of {', '.join(LEVELS)})")
    return n


def python_level(name: str) -> int:
    """The `logging` level for an Envoy level name (trace is below DEBUG, off above CRITICAL)."""
    return {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
            "error": logging.ERROR, "critical": logging.CRITICAL,
            "off": logging.CRITICAL + 10}[level_name(name)]


class Control:
    """Control(options=None, config_path=None, version=None): make it in the master, before fork.

    Plain attributes (fixed at construction, inherited by the forked children):
        master_pid, start_time (epoch seconds), options (dict), config_path, version
    """

    def __init__(self, options: Optional[dict] = None, config_path: Optional[str] = None,
                 version: Optional[str] = None, *, master_pid: Optional[int] = None,
                 start_time: Optional[float] = None, buffer=None):
        from proxy import __version__
        self.options: dict[str, Any] = dict(options or {})
        self.config_path = config_path if config_path is not None else self.options.get("config_path")
        self.version = version or f"cyvoy/{__version__}"
        self._mm = buffer if buffer is not None else mmap.mmap(
            -1, SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._b = _Block.from_buffer(self._mm)
        self._applied_level: Optional[str] = None
        if buffer is not None and self._b.magic == MAGIC:
            # attaching to an existing block (tests): take its fixed values
            self.master_pid = self._b.master_pid
            self.start_time = self._b.start_time
            return
        b = self._b
        b.version = VERSION
        b.master_pid = master_pid if master_pid is not None else os.getpid()
        b.start_time = start_time if start_time is not None else time.time()
        b.state = STATES["PRE_INITIALIZING"]
        b.concurrency = max(0, int(self.options.get("concurrency") or 0))
        b.log_level = LEVELS.index(level_name(self.options.get("log_level") or "info"))
        b.magic = MAGIC
        self.master_pid = b.master_pid
        self.start_time = b.start_time

    @property
    def buffer(self):
        """The shared mapping (for Control(buffer=...) in tests)."""
        return self._mm

    # ---- master writes ---------------------------------------------------------------------------
    def set_state(self, state: str) -> None:
        """"PRE_INITIALIZING", "INITIALIZING", "LIVE" or "DRAINING" (Envoy's ServerInfo.State)."""
        s = str(state).upper()
        if s not in STATES:
            raise ValueError(f"unknown server state {state!r} (one of {', '.join(STATES)})")
        self._b.state = STATES[s]

    def set_concurrency(self, n: int) -> None:
        self._b.concurrency = max(0, int(n))

    def set_workers(self, pids: Iterable[int]) -> None:
        """The current workers' pids, in slot order (at most MAX_WORKERS are kept)."""
        pids = [int(p) for p in pids][:MAX_WORKERS]
        b = self._b
        b.seq += 1                      # odd: readers wait
        for i, p in enumerate(pids):
            b.workers[i] = p
        b.n_workers = len(pids)
        b.seq += 1                      # even: published

    def set_reload_error(self, error: Optional[str]) -> None:
        """The reason the last reload was refused, or None after a reload that took."""
        b = self._b
        b.seq += 1
        if error is None:
            b.reload_error_set = 0
            b.reload_error_len = 0
        else:
            data = str(error).encode("utf-8", "replace")
            if len(data) > MAX_ERROR:
                data = data[:MAX_ERROR].decode("utf-8", "ignore").encode("utf-8")
            ctypes.memmove(ctypes.addressof(b.reload_error), data, len(data))
            b.reload_error_len = len(data)
            b.reload_error_set = 1
        b.seq += 1

    # ---- admin writes ----------------------------------------------------------------------------
    def set_healthcheck_failed(self, failed: bool) -> None:
        self._b.healthcheck_failed = 1 if failed else 0

    def set_log_level(self, name: str) -> None:
        self._b.log_level = LEVELS.index(level_name(name))

    # ---- everyone reads --------------------------------------------------------------------------
    def state(self) -> str:
        """The state the master set."""
        return STATE_NAMES.get(self._b.state, "PRE_INITIALIZING")

    def server_state(self) -> str:
        """The state as Envoy reports it (/ready, /server_info): LIVE turns DRAINING while
        POST /healthcheck/fail is in force."""
        s = self.state()
        if s == "LIVE" and self.healthcheck_failed():
            return "DRAINING"
        return s

    def concurrency(self) -> int:
        return int(self._b.concurrency)

    def healthcheck_failed(self) -> bool:
        return self._b.healthcheck_failed != 0

    def log_level(self) -> str:
        i = self._b.log_level
        return LEVELS[i] if i < len(LEVELS) else "info"

    def apply_log_level(self) -> bool:
        """Set this process's root logger to the shared level if it changed since the last call
        (cheap: one load and a compare). True if it changed. For the workers' tick."""
        name = self.log_level()
        if name == self._applied_level:
            return False
        self._applied_level = name
        logging.getLogger().setLevel(python_level(name))
        return True

    def worker_pids(self) -> list[int]:
        return self._read(lambda b: [b.workers[i] for i in range(min(b.n_workers, MAX_WORKERS))])

    def last_reload_error(self) -> Optional[str]:
        def read(b):
            if not b.reload_error_set:
                return None
            n = min(b.reload_error_len, MAX_ERROR)
            return bytes(b.reload_error[:n]).decode("utf-8", "replace")
        return self._read(read)

    def _read(self, fn):
        b = self._b
        deadline = None
        while True:
            s1 = b.seq
            if not s1 & 1:
                value = fn(b)
                if b.seq == s1:
                    return value
                continue
            # a master in the middle of an update (microseconds); one that died there: give up
            # after READ_WAIT_S and read what is there
            now = time.monotonic()
            if deadline is None:
                deadline = now + READ_WAIT_S
            elif now >= deadline:
                return fn(b)
            time.sleep(0.0005)
