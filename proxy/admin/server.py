"""Envoy's admin interface, served by its own process (forked by the master, never a worker).

Entry point (in the forked child; returns the exit code):

    proxy.admin.server.run(bootstrap, table, layout, stats_store, registry, control,
                           *, allow_remote=False, sock=None, stats_slot=None) -> int

  bootstrap    proxy.config.model.Bootstrap; bootstrap.admin gives the address (None: returns 0)
  table        the shared HostTable; layout its proxy.cluster_manager.Layout
  stats_store  proxy._fastpath.stats.StatsStore (or None: /stats shows the server.* gauges only)
  registry     proxy.stats.StatRegistry of the bootstrap (None with stats_store None)
  control      proxy.admin.control.Control (shared with the master and the workers)
  allow_remote --admin-allow-remote: without it a non-loopback admin address is refused
  sock         a listening socket bound by the master (see `bind`); None: bind here
  stats_slot   a store slot the master allocated for this process: the admin then counts its
               own requests in http.admin.* / listener.admin.* as Envoy does; None: it doesn't

`bind(bootstrap, allow_remote)` checks and binds in the master before forking, so a refused or
busy address is reported at start-up, and a respawned or reloaded admin process keeps the port.
Both raise AdminAddressError (a ValueError) with the reason.

Signals: SIGTERM closes the listener, lets responses in progress finish (1 s) and exits 0;
SIGINT is ignored (Ctrl-C reaches the process group; the master decides). The process also
exits when it is no longer the child of control.master_pid (the master went away): make the
Control in the master process itself and fork the admin process from it.

Endpoints: see ENDPOINTS below and /help. Envoy's paths and formats (docs/root/operations/
admin.rst; source/server/admin/*.cc); what cyvoy does differently is said in the help text and
in proxy/admin/README.md.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable, Optional

import orjson

from proxy.admin import clusters as clusters_mod
from proxy.admin import config_dump
from proxy.admin import procstats
from proxy.admin.control import LEVELS, level_name
from proxy.admin.http import Request, Response, Server
from proxy.admin.stats_view import StatsView

log = logging.getLogger("cyvoy.admin")

GRACE_S = 1.0
PARENT_CHECK_S = 1.0


class AdminAddressError(ValueError):
    """The admin address is refused (not loopback without --admin-allow-remote) or can't be bound."""


# ---- address -------------------------------------------------------------------------------------

def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def check_address(bootstrap, allow_remote: bool = False) -> None:
    """Raise AdminAddressError if bootstrap.admin is not a loopback address and remote access
    was not allowed."""
    admin = bootstrap.admin
    if admin is None or allow_remote or _is_loopback(admin.address):
        return
    raise AdminAddressError(
        f"admin: refusing to listen on {_hostport(admin.address, admin.port)} (admin.address): "
        "the admin interface can stop the server and shows its whole configuration, so it is "
        "loopback-only unless --admin-allow-remote")


def bind(bootstrap, allow_remote: bool = False) -> Optional[socket.socket]:
    """The admin listening socket (non-blocking, listening), or None without bootstrap.admin."""
    admin = bootstrap.admin
    if admin is None:
        return None
    check_address(bootstrap, allow_remote)
    family = socket.AF_INET6 if ":" in admin.address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((admin.address, admin.port))
        s.listen(128)
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise AdminAddressError(
            f"admin: cannot listen on {_hostport(admin.address, admin.port)}: {e.strerror or e}") from e
    return s


# ---- endpoints -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    path: str
    help: str
    handler: str            # method name on Admin
    mutates: bool = False   # POST only
    params: tuple = ()      # (name, help)


ENDPOINTS = (
    Endpoint("/", "this list of admin commands", "h_help"),
    Endpoint("/help", "this list of admin commands", "h_help"),
    Endpoint("/certs", "TLS certificates of the listeners (path, serial, SANs, days until "
             "expiration), JSON", "h_certs"),
    Endpoint("/clusters", "upstream clusters and every host: health flags, weight, priority, "
             "requests (rq_active, rq_total, rq_error, rq_success), latency EWMA", "h_clusters",
             params=(("format", "text (default) or json"),)),
    Endpoint("/config_dump", "the configuration in effect as read from the file, secrets "
             "redacted, JSON", "h_config_dump"),
    Endpoint("/drain_listeners", "drain all listeners and exit: cyvoy's graceful stop (SIGTERM "
             "to the master; in-flight requests get --drain-time-s)", "h_drain_listeners", True,
             (("graceful", "accepted: cyvoy's drain is always graceful"),
              ("inboundonly", "accepted: every cyvoy listener is inbound"),
              ("skip_exit", "not supported: cyvoy exits after draining"))),
    Endpoint("/healthcheck/fail", "fail inbound health checks: /ready and the server state "
             "turn DRAINING, workers see the flag", "h_healthcheck_fail", True),
    Endpoint("/healthcheck/ok", "pass inbound health checks again", "h_healthcheck_ok", True),
    Endpoint("/hot_restart_version", "hot restart compatibility version (disabled: cyvoy "
             "reloads on SIGHUP instead)", "h_hot_restart_version"),
    Endpoint("/listeners", "listeners and the addresses they are bound to", "h_listeners",
             params=(("format", "text (default) or json"),)),
    Endpoint("/logging", "list the log level (no parameters) or change it for every process: "
             "?level=<level>", "h_logging", True,
             (("level", "one of " + ", ".join(LEVELS)),)),
    Endpoint("/quitquitquit", "exit the server (graceful stop of the master)", "h_quit", True),
    Endpoint("/ready", "the server state; 200 if LIVE, else 503", "h_ready"),
    Endpoint("/reset_counters", "counters read 0 from now on in this admin's view (nothing "
             "shared is reset)", "h_reset_counters", True),
    Endpoint("/runtime", "runtime values of the static layers, JSON", "h_runtime"),
    Endpoint("/runtime_modify", "not supported by cyvoy (runtime is read from the config)",
             "h_runtime_modify", True),
    Endpoint("/server_info", "version, state, uptime, command line options, node, workers, "
             "last reload error, JSON", "h_server_info"),
    Endpoint("/stats", "every statistic", "h_stats",
             params=(("usedonly", "only the stats that have been written"),
                     ("filter", "regular expression (partial match) on stat names"),
                     ("format", "text (default), json or prometheus"))),
    Endpoint("/stats/prometheus", "every statistic in Prometheus text format 0.0.4",
             "h_stats_prometheus",
             params=(("usedonly", "only the stats that have been written"),
                     ("filter", "regular expression (partial match) on stat names"))),
)
_BY_PATH = {e.path: e for e in ENDPOINTS}


def help_text() -> str:
    lines = ["admin commands are:"]
    for e in sorted(ENDPOINTS, key=lambda e: e.path):
        lines.append(f"  {e.path}{' (POST)' if e.mutates else ''}: {e.help}")
        for name, h in e.params:
            lines.append(f"      {name}: {h}")
    return "\n".join(lines) + "\n"


def _dur(seconds: float) -> str:
    """google.protobuf.Duration in JSON: "6s"."""
    return f"{int(max(0, seconds))}s"


class Admin:
    """The handlers, over what the process was given. `handle(Request) -> Response`."""

    def __init__(self, bootstrap, table, layout, stats_store, registry, control, *,
                 stats_slot=None, signal_master: Optional[Callable[[int], None]] = None):
        self.bootstrap = bootstrap
        self.table = table
        self.layout = layout
        self.control = control
        self.stats = StatsView(registry, stats_store, table, control, self._extra_gauges,
                               slot=stats_slot, layout=layout)
        self._signal_master = signal_master or (lambda sig: os.kill(control.master_pid, sig))
        self._help = help_text()

    # ---- dispatch --------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        t0 = time.monotonic()
        resp = self._dispatch(req)
        self.stats.count_request(resp.status, (time.monotonic() - t0) * 1000.0)
        return resp

    def _dispatch(self, req: Request) -> Response:
        e = _BY_PATH.get(req.path)
        if e is None:
            return Response.text("invalid path. " + self._help, 404)
        if e.mutates and req.method != "POST":
            # Envoy answers 405 "Method GET not allowed, POST required." (admin.cc)
            r = Response.text(f"Method {req.method} not allowed, POST required. "
                              f"This endpoint requires POST: {e.path} changes the server's "
                              "state.\n", 405)
            r.headers.append(("allow", "POST"))
            return r
        return getattr(self, e.handler)(req)

    # ---- read-only -------------------------------------------------------------------------------
    def h_help(self, req: Request) -> Response:
        return Response.text(self._help)

    def h_ready(self, req: Request) -> Response:
        state = self.control.server_state()
        return Response.text(state + "\n", 200 if state == "LIVE" else 503)

    def h_hot_restart_version(self, req: Request) -> Response:
        return Response.text("disabled\n")

    def _options(self) -> dict:
        """admin.v3.CommandLineOptions, from what the master was started with."""
        o = self.control.options
        drain = o.get("drain_time_s", o.get("drain_time", 600))
        try:
            drain_text = _dur(float(drain))
        except (TypeError, ValueError):
            drain_text = str(drain)
        return {
            "base_id": "0",
            "concurrency": self.control.concurrency() or int(o.get("concurrency") or 0),
            "config_path": self.control.config_path or "",
            "config_yaml": "",
            "allow_unknown_static_fields": False,
            "admin_address_path": "",
            "local_address_ip_version": "v4",
            "log_level": self.control.log_level(),
            "component_log_level": "",
            "log_format": "[%Y-%m-%d %T.%e][%P][%l][%n] %v",
            "log_path": "",
            "service_cluster": self.bootstrap.node_cluster,
            "service_node": self.bootstrap.node_id,
            "service_zone": "",
            "mode": "Serve",
            "disable_hot_restart": True,
            "enable_mutex_tracing": False,
            "restart_epoch": 0,
            "file_flush_interval": "10s",
            "drain_time": drain_text,
            "drain_strategy": "Gradual",
            "parent_shutdown_time": "900s",
            "cpuset_threads": False,
            "hot_restart_version": False,
        }

    def _node(self) -> dict:
        from proxy import __version__
        src = (self.bootstrap.source or {}).get("node") or {}
        node = dict(src) if isinstance(src, dict) else {}
        node["id"] = self.bootstrap.node_id
        node["cluster"] = self.bootstrap.node_cluster
        node["user_agent_name"] = "cyvoy"
        parts = (__version__.split(".") + ["0", "0", "0"])[:3]
        try:
            node["user_agent_build_version"] = {"version": {
                "major_number": int(parts[0]), "minor_number": int(parts[1]),
                "patch": int(parts[2])}}
        except ValueError:
            pass
        return node

    def h_server_info(self, req: Request) -> Response:
        c = self.control
        uptime = time.time() - c.start_time
        workers = procstats.workers(c.worker_pids())
        info = {
            "version": c.version,
            "state": c.server_state(),
            "hot_restart_version": "disabled",
            "command_line_options": self._options(),
            "uptime_current_epoch": _dur(uptime),
            "uptime_all_epochs": _dur(uptime),
            "node": self._node(),
            "last_reload_error": c.last_reload_error(),
            "cyvoy": {
                "master_pid": c.master_pid,
                "admin_pid": os.getpid(),
                "healthcheck_failed": c.healthcheck_failed(),
                "log_level": c.log_level(),
                "options": c.options,
                "workers": workers,
            },
        }
        return Response.json(orjson.dumps(info, option=orjson.OPT_INDENT_2, default=str) + b"\n")

    def h_clusters(self, req: Request) -> Response:
        if req.query.get("format") == "json":
            return Response.json(clusters_mod.render_json(self.bootstrap, self.table, self.layout))
        return Response.text(clusters_mod.render_text(self.bootstrap, self.table, self.layout))

    def h_config_dump(self, req: Request) -> Response:
        return Response.json(config_dump.render(self.bootstrap.source))

    def h_listeners(self, req: Request) -> Response:
        ls = self.bootstrap.listeners
        if req.query.get("format") == "json":
            body = {"listener_statuses": [
                {"name": x.name,
                 "local_address": {"socket_address": {"address": x.address, "port_value": x.port}}}
                for x in ls]}
            return Response.json(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return Response.text("".join(f"{x.name}::{_hostport(x.address, x.port)}\n" for x in ls))

    def h_certs(self, req: Request) -> Response:
        from proxy.admin.certs import certificates
        body = {"certificates": certificates(self.bootstrap)}
        return Response.json(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")

    def h_runtime(self, req: Request) -> Response:
        entries = {k: {"final_value": str(v).lower() if isinstance(v, bool) else str(v),
                       "layer_values": [str(v).lower() if isinstance(v, bool) else str(v)]}
                   for k, v in sorted((self.bootstrap.runtime or {}).items())}
        layers = [x.get("name", "") for x in
                  ((self.bootstrap.source or {}).get("layered_runtime") or {}).get("layers") or []
                  if isinstance(x, dict)]
        body = {"layers": layers or ["static"], "entries": entries}
        return Response.json(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")

    # ---- stats -----------------------------------------------------------------------------------
    def _extra_gauges(self) -> dict:
        """Gauges only this reader computes: per-worker process figures."""
        return procstats.gauges(procstats.workers(self.control.worker_pids()))

    def h_stats(self, req: Request) -> Response:
        return self._stats(req.query, None)

    def h_stats_prometheus(self, req: Request) -> Response:
        return self._stats(req.query, "prometheus")

    def _stats(self, query: dict, fmt) -> Response:
        status, ctype, body = self.stats.render(query, fmt)
        return Response(status, body, ctype)

    # ---- mutations -------------------------------------------------------------------------------
    def h_reset_counters(self, req: Request) -> Response:
        self.stats.reset_counters()
        return Response.text("OK\n")

    def h_healthcheck_fail(self, req: Request) -> Response:
        self.control.set_healthcheck_failed(True)
        log.info("admin: /healthcheck/fail: failing health checks")
        return Response.text("OK\n")

    def h_healthcheck_ok(self, req: Request) -> Response:
        self.control.set_healthcheck_failed(False)
        log.info("admin: /healthcheck/ok: passing health checks")
        return Response.text("OK\n")

    def h_logging(self, req: Request) -> Response:
        if not req.query_list:
            return Response.text(self._levels_text())
        level = req.query.get("level")
        others = [k for k, _ in req.query_list if k != "level"]
        if level is None or others:
            return Response.text(
                "usage: /logging?level=<level> (cyvoy has one level for every logger; "
                f"per-logger and paths= changes are not supported)\nlevels: {', '.join(LEVELS)}\n"
                + self._levels_text(), 400)
        try:
            name = level_name(level)
        except ValueError as e:
            return Response.text(f"{e}\n" + self._levels_text(), 400)
        self.control.set_log_level(name)
        self.control.apply_log_level()
        log.warning("admin: log level set to %s", name)
        return Response.text(self._levels_text())

    def _levels_text(self) -> str:
        return f"active loggers:\n  cyvoy: {self.control.log_level()}\n"

    def _stop_master(self, what: str) -> None:
        log.warning("admin: %s: asking the master (%d) to stop gracefully", what,
                    self.control.master_pid)
        try:
            self._signal_master(signal.SIGTERM)
        except (ProcessLookupError, PermissionError) as e:
            log.error("admin: cannot signal the master: %s", e)

    def h_quit(self, req: Request) -> Response:
        r = Response.text("OK\n")
        r.after = lambda: self._stop_master("/quitquitquit")
        return r

    def h_drain_listeners(self, req: Request) -> Response:
        if "skip_exit" in req.query:
            return Response.text("drain_listeners?skip_exit is not supported by cyvoy: draining "
                                 "is its graceful stop, which exits when done\n", 501)
        r = Response.text("OK\n")
        r.after = lambda: self._stop_master("/drain_listeners")
        return r

    def h_runtime_modify(self, req: Request) -> Response:
        return Response.text("runtime_modify is not supported by cyvoy: runtime values come from "
                             "the config's static layers only; change the config and reload "
                             "(SIGHUP)\n", 501)


# ---- the process ---------------------------------------------------------------------------------

def run(bootstrap, table, layout, stats_store, registry, control, *, allow_remote: bool = False,
        sock: Optional[socket.socket] = None, stats_slot=None) -> int:
    """Serve the admin interface until SIGTERM (or the master's exit); returns the exit code.
    Raises AdminAddressError when binding here (sock None) is refused or fails."""
    if bootstrap.admin is None:
        return 0
    if sock is None:
        sock = bind(bootstrap, allow_remote)
    else:
        check_address(bootstrap, allow_remote)
    import uvloop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    admin = Admin(bootstrap, table, layout, stats_store, registry, control, stats_slot=stats_slot)
    try:
        return loop.run_until_complete(_serve(admin, sock, control))
    finally:
        loop.close()


async def _serve(admin: Admin, sock, control) -> int:
    loop = asyncio.get_running_loop()
    server = Server(admin.handle, admin.stats.count_connection)
    await server.start(sock)
    host, port = sock.getsockname()[:2]
    log.info("admin address: %s", _hostport(host, port))
    done = loop.create_future()

    def stop(reason: str):
        if not done.done():
            log.debug("admin: stopping (%s)", reason)
            done.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")

    async def watch_parent():
        # the admin process is the master's child: re-parented means the master is gone
        while not done.done():
            if os.getppid() != control.master_pid:
                stop("the master is gone")
                return
            control.apply_log_level()
            await asyncio.sleep(PARENT_CHECK_S)

    watcher = loop.create_task(watch_parent())
    await done
    watcher.cancel()
    await server.close(GRACE_S)
    return 0
