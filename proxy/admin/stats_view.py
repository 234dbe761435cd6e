"""The admin's view of the stats: proxy.stats (StatsReader + proxy.stats.format) over the shared
StatsStore, plus the gauges only this reader computes (per-worker process figures), and the
admin's own http.admin.* / listener.admin.* counting when the master gave it a store slot.

Without a store (stats_store or registry None) the admin still answers /stats with the server.*
gauges it can compute itself (uptime, state, live, concurrency, hot_restart_epoch) and the worker
figures, in the same three formats.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Optional

import orjson

log = logging.getLogger("cyvoy.admin")

PROMETHEUS = "text/plain; version=0.0.4; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"


class StatsView:
    def __init__(self, registry, store, table, control, extra: Callable[[], dict], *,
                 slot: Optional[int] = None, layout=None):
        self.control = control
        self.extra = extra
        self.reader = None
        self._fmt = None
        self._baseline_t = 0.0
        self._http = self._listener = self._view = None
        if registry is None or store is None:
            return
        from proxy.stats import format as fmt
        from proxy.stats.reader import ServerInfo, StatsReader
        self._fmt = fmt
        # the reader's clock is monotonic; the master's start time is wall-clock
        start_mono = time.monotonic() - max(0.0, time.time() - control.start_time)
        server = ServerInfo(concurrency=control.concurrency() or 1, start_time=start_mono,
                            state=control.server_state(), pids=self._pids)
        cluster_index = ({n: cl.index for n, cl in layout.clusters.items()}
                         if layout is not None else None)
        self.reader = StatsReader(registry, store, host_table=table, server=server,
                                  cluster_index=cluster_index)
        if slot is not None:
            try:
                self._view = store.view(slot)
                self._http = registry.http_indexes("admin")
                self._listener = registry.listener_indexes("admin")
            except (KeyError, ValueError, IndexError) as e:
                log.warning("admin: not counting admin requests: %s", e)
                self._view = None

    def _pids(self) -> list[int]:
        """The master and every process under it (workers, health checker, admin)."""
        import psutil
        try:
            m = psutil.Process(self.control.master_pid)
            return [m.pid] + [p.pid for p in m.children(recursive=True)]
        except psutil.Error:
            return []

    # ---- the admin's own traffic (http.admin.*, listener.admin.*) ---------------------------------
    def count_request(self, status: int, ms: float) -> None:
        v, h = self._view, self._http
        if v is None:
            return
        v.inc(h.downstream_rq_total)
        v.inc(h.downstream_rq_http1_total)
        v.inc(h.downstream_rq_completed)
        if 100 <= status <= 599:
            v.inc(h.downstream_rq_1xx + status // 100 - 1)
        v.record_time(h.downstream_rq_time, ms)

    def count_connection(self, opened: bool, lifetime_ms: float = 0.0) -> None:
        v, h, li = self._view, self._http, self._listener
        if v is None:
            return
        if opened:
            v.inc(h.downstream_cx_total)
            v.inc(h.downstream_cx_http1_total)
            v.inc(li.downstream_cx_total)
            v.gauge_add(h.downstream_cx_active, 1)
            v.gauge_add(h.downstream_cx_http1_active, 1)
            v.gauge_add(li.downstream_cx_active, 1)
        else:
            v.inc(h.downstream_cx_destroy)
            v.inc(li.downstream_cx_destroy)
            v.gauge_add(h.downstream_cx_active, -1)
            v.gauge_add(h.downstream_cx_http1_active, -1)
            v.gauge_add(li.downstream_cx_active, -1)
            v.record_time(h.downstream_cx_length_ms, lifetime_ms)
            v.record_time(li.downstream_cx_length_ms, lifetime_ms)

    # ---- reading ---------------------------------------------------------------------------------
    def reset_counters(self) -> None:
        if self.reader is not None:
            self.reader.reset_counters()

    def _snapshot(self):
        """(snapshot, Stat class) with the reader's live server state and the extra gauges."""
        from proxy.stats.reader import Stat
        srv = self.reader.server
        srv.state = self.control.server_state()
        srv.concurrency = self.control.concurrency() or srv.concurrency
        snap = self.reader.snapshot()
        for name, value in self.extra().items():
            snap.stats.append(Stat(name, "gauge", value, True))
        return snap

    def render(self, query: dict, fmt: Optional[str] = None) -> tuple[int, str, bytes]:
        """(status, content type, body) for /stats with these query parameters (Envoy's:
        usedonly, filter, format, type, histogram_buckets); `fmt` forces the format."""
        params = dict(query)
        if fmt is not None:
            params["format"] = fmt
        if self.reader is None:
            return self._render_own(params)
        try:
            opt = self._fmt.Options(params)
        except self._fmt.BadRequest as e:
            return 400, TEXT, (str(e) + "\n").encode()
        ctype, body = self._fmt.render(self._snapshot(), opt)
        return 200, ctype, body

    def _render_own(self, params: dict) -> tuple[int, str, bytes]:
        pattern = None
        if params.get("filter"):
            try:
                pattern = re.compile(params["filter"])
            except re.error as e:
                return 400, TEXT, f"Invalid regex: {e}\n".encode()
        fmt = params.get("format") or "text"
        own = self._own(pattern)
        if fmt == "json":
            return 200, JSON, orjson.dumps({"stats": [{"name": k, "value": v} for k, v in own]})
        if fmt == "prometheus":
            out = []
            for k, v in own:
                fam = "envoy_" + "".join(c if c.isalnum() or c == "_" else "_" for c in k)
                out.append(f"# TYPE {fam} gauge\n{fam}{{}} {_num(v)}\n")
            return 200, PROMETHEUS, "".join(out).encode()
        if fmt not in ("text", "html"):
            return 400, TEXT, f"invalid format {fmt!r}: use text, json or prometheus\n".encode()
        return 200, TEXT, "".join(f"{k}: {_num(v)}\n" for k, v in own).encode()

    def _own(self, pattern) -> list[tuple[str, float]]:
        """The server.* gauges this process can compute by itself, plus the extra ones."""
        c = self.control
        state = c.server_state()
        g = {
            "server.concurrency": c.concurrency(),
            "server.hot_restart_epoch": 0,
            "server.live": 1 if state == "LIVE" else 0,
            "server.state": {"LIVE": 0, "DRAINING": 1, "PRE_INITIALIZING": 2,
                             "INITIALIZING": 3}.get(state, 2),
            "server.uptime": int(max(0.0, time.time() - c.start_time)),
        }
        g.update(self.extra())
        return [(k, v) for k, v in sorted(g.items())
                if pattern is None or pattern.search(k) is not None]


def _num(v) -> str:
    if isinstance(v, float) and v == int(v):
        return str(int(v))
    return str(v)
