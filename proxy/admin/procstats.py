"""Per-process figures of the workers (psutil): resident memory, CPU seconds, open descriptors.

Exposed as gauges `server.worker_<i>.memory_rss` (bytes), `server.worker_<i>.cpu_seconds`
(user + system) and `server.worker_<i>.open_fds`, where <i> is the worker's index in the
master's list (its slot), and in /server_info under "cyvoy". A process that is gone or not
readable is left out.
"""
from __future__ import annotations

import psutil

_cache: dict[int, psutil.Process] = {}


def _proc(pid: int) -> psutil.Process:
    p = _cache.get(pid)
    if p is None:
        p = _cache[pid] = psutil.Process(pid)
    return p


def sample(pid: int) -> dict | None:
    try:
        p = _proc(pid)
        with p.oneshot():
            if not p.is_running():
                raise psutil.NoSuchProcess(pid)
            rss = p.memory_info().rss
            t = p.cpu_times()
            fds = p.num_fds()
    except (psutil.Error, OSError):
        _cache.pop(pid, None)
        return None
    return {"pid": pid, "memory_rss": int(rss), "cpu_seconds": round(t.user + t.system, 2),
            "open_fds": int(fds)}


def workers(pids: list[int]) -> list[dict]:
    """[{index, pid, memory_rss, cpu_seconds, open_fds}] for the pids that could be read."""
    out = []
    for i, pid in enumerate(pids):
        s = sample(pid)
        if s is not None:
            s["index"] = i
            out.append(s)
    for pid in list(_cache):
        if pid not in pids:
            _cache.pop(pid, None)
    return out


def gauges(samples: list[dict]) -> dict[str, float]:
    g: dict[str, float] = {}
    for s in samples:
        p = f"server.worker_{s['index']}."
        g[p + "memory_rss"] = s["memory_rss"]
        g[p + "cpu_seconds"] = s["cpu_seconds"]
        g[p + "open_fds"] = s["open_fds"]
    return g
