"""The master: loads the config, forks the workers and supervises them. It never touches requests.

Signals (as gunicorn's arbiter and Envoy's CLI):
  SIGTERM, SIGINT  graceful stop: workers stop accepting and finish in-flight requests for up to
                   --drain-time-s, then the master exits 0.
  SIGQUIT          immediate stop.
  SIGHUP           re-read the config; if valid, start a new generation of workers on the same
                   listening sockets and drain the old one; if not, keep serving and log why.
  SIGTTIN/SIGTTOU  one worker more / less.
  SIGCHLD          reap; a worker that died unasked is respawned, with back-off if it keeps dying.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import signal
import ssl
import sys
import time
import traceback
from dataclasses import dataclass, field

from proxy import cluster_manager, systemd
from proxy import tls
from proxy.config import ConfigError, load_file
from proxy.config.model import Bootstrap
from proxy.filters import SharedFilterState
from proxy.listener import ListenerSockets

log = logging.getLogger("cyvoy.master")

MAX_BACKOFF_S = 10.0
STABLE_AFTER_S = 5.0   # a worker that lived this long resets its slot's back-off


@dataclass
class WorkerProc:
    pid: int
    slot: int
    generation: int
    ready_fd: int
    started: float
    ready: bool = False
    stopping: bool = False
    stats_slot: int = -1
    store: object = None
    table: object = None        # the generation's host table (circuit-breaker units to give back)
    layout: object = None
    registry: object = None
    filter_state: object = None  # the generation's shared filter memory (connection counts to give back)


@dataclass
class Options:
    workers: int
    drain_time_s: float = 600.0
    pid_file: str | None = None
    log_level: str = "info"
    cpu_affinity: bool = False
    extra: dict = field(default_factory=dict)


class Master:
    def __init__(self, config_path: str | None, bootstrap: Bootstrap, opts: Options):
        self.config_path = config_path
        self.bootstrap = bootstrap
        self.opts = opts
        self.num_workers = max(1, opts.workers)
        self.generation = 0
        self.listeners: dict[tuple, ListenerSockets] = {}
        self.retired: list[tuple[int, ListenerSockets]] = []   # (generation retired in, sockets)
        self.workers: dict[int, WorkerProc] = {}
        self.backoff: dict[int, float] = {}
        self.respawn_at: dict[int, float] = {}
        self.signals: list[int] = []
        self.state = "starting"
        self.announced_ready = False
        self.last_reload_error: str | None = None
        self._wake_r = self._wake_w = -1
        # the shared-memory host table and which slots each cluster owns; the health-check
        # process (one, supervised like a worker) is its writer for health and DNS
        self.table = None
        self.layout = None
        self.filter_state = None   # the HTTP filters' shared memory, one per generation
        self.health_pid = 0
        self.health_slot = (None, -1)
        self.health_started = 0.0
        # Envoy's stats: one shared-memory slot per process, summed by the admin process
        self.registry = None
        self.stats = None
        # the admin interface: its own process, its socket bound here, a shared control block
        self.control = None
        self.admin_sock = None
        self.admin_pid = 0
        self.admin_slot = (None, -1)
        self.admin_started = 0.0
        self.admin_backoff = 0.0
        self.admin_respawn_at = 0.0
        self._retiring: dict[int, tuple] = {}   # helper processes told to stop: their stats slots
        self.health_backoff = 0.0
        self.health_respawn_at = 0.0

    # ---- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                    signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        if self.opts.pid_file:
            with open(self.opts.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        raise_open_file_limit()
        try:
            self._open_listeners(self.bootstrap)
        except OSError as e:
            log.critical("cannot open listener: %s", e)
            return 1
        from proxy.admin import server as admin_server
        from proxy.admin.control import Control
        self.control = Control({"concurrency": self.num_workers, "drain_time_s": self.opts.drain_time_s,
                                "log_level": self.opts.log_level, "config_path": self.config_path,
                                "workers": self.num_workers}, config_path=self.config_path)
        try:
            self.admin_sock = admin_server.bind(self.bootstrap, self.opts.extra.get("admin_allow_remote", False))
        except admin_server.AdminAddressError as e:
            log.critical("%s", e)
            return 1
        self.table, self.layout = cluster_manager.build_table(self.bootstrap)
        self.filter_state = SharedFilterState(self.bootstrap)
        try:
            tls.prepare_server_contexts(self.bootstrap)    # shared session ticket keys
        except (ssl.SSLError, OSError) as e:
            log.critical("cannot load a listener's certificates: %s", e)
            return 1
        self._new_stats(self.bootstrap)
        self._spawn_health()
        self._spawn_admin()
        for ls in self.listeners.values():
            log.info("listener '%s' on %s:%d", ls.name, ls.address, ls.port)
        for slot in range(self.num_workers):
            self._spawn(slot)
        self.state = "running"
        try:
            return self._loop()
        finally:
            for ls in self.listeners.values():
                ls.close()
            if self.opts.pid_file:
                try:
                    os.unlink(self.opts.pid_file)
                except OSError:
                    pass

    def _loop(self) -> int:
        while True:
            self._handle_signals()
            if self.state == "stopped":
                return 0
            self._respawn_due()
            fds = [self._wake_r] + [w.ready_fd for w in self.workers.values() if w.ready_fd >= 0]
            timeout = 1.0
            # wake for the next respawn that is due: a worker's, the health process's, the admin's
            due = [*self.respawn_at.values(), *(t for t in (self.health_respawn_at, self.admin_respawn_at) if t)]
            if due:
                timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            for fd in readable:
                if fd == self._wake_r:
                    self._drain_wake()
                else:
                    self._on_worker_pipe(fd)

    # ---- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig == signal.SIGCHLD:
                self._reap()
            elif sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(graceful=True)
            elif sig == signal.SIGQUIT:
                self._stop(graceful=False)
            elif self.state != "running":
                continue
            elif sig == signal.SIGHUP:
                self._reload()
            elif sig == signal.SIGTTIN:
                self._grow()
            elif sig == signal.SIGTTOU:
                self._shrink()
            elif sig == signal.SIGUSR1:
                # logrotate moved the access logs: every worker reopens its files
                for w in self.workers.values():
                    try:
                        os.kill(w.pid, signal.SIGUSR1)
                    except ProcessLookupError:
                        pass

    # ---- workers ---------------------------------------------------------------------------
    def _spawn(self, slot: int) -> None:
        for ls in self.listeners.values():
            ls.ensure_slots(slot + 1)
        r, w = os.pipe()
        store, stats_slot = self.stats, self.stats.alloc_slot()

        def child() -> int:
            os.close(r)
            self._become_worker(slot)
            if self.opts.cpu_affinity:
                pin_to_cpu(slot)
            from proxy import worker
            socks = {ls.name: ls.socks[slot] for ls in self.listeners.values()}
            return worker.run(self.bootstrap, slot, self.generation, socks, w, self.table, self.layout,
                              (self.registry, store, stats_slot), self.control, self.filter_state)

        pid = _fork(child)
        os.close(w)
        self.workers[pid] = WorkerProc(pid, slot, self.generation, r, time.monotonic(),
                                       stats_slot=stats_slot, store=store, table=self.table,
                                       layout=self.layout, registry=self.registry,
                                       filter_state=self.filter_state)
        self._publish_workers()
        log.debug("started worker %d (slot %d, generation %d)", pid, slot, self.generation)

    def _become_worker(self, slot: int) -> None:
        """In the child: drop what belongs to the master and to other slots."""
        for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        # Ctrl-C reaches the whole process group; the master alone decides how to stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for w in self.workers.values():
            if w.ready_fd >= 0:
                os.close(w.ready_fd)
        for ls in list(self.listeners.values()) + [ls for _, ls in self.retired]:
            for i, s in enumerate(ls.socks):
                if i != slot or ls not in self.listeners.values():
                    s.close()

    def _on_worker_pipe(self, fd: int) -> None:
        w = next((w for w in self.workers.values() if w.ready_fd == fd), None)
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if w is None:
            return
        if not data:   # the worker closed its end: it is exiting
            os.close(fd)
            w.ready_fd = -1
            return
        if b"R" in data and not w.ready:
            w.ready = True
            self._on_ready(w)

    def _on_ready(self, w: WorkerProc) -> None:
        # A new generation's worker is up: the old worker of its slot can drain now.
        for old in self.workers.values():
            if old.slot == w.slot and old.generation < w.generation and not old.stopping:
                self._stop_worker(old)
        if not self.announced_ready and all(
                x.ready for x in self.workers.values() if x.generation == self.generation):
            self.announced_ready = True
            self.control.set_state("LIVE")
            log.info("cyvoy ready: %d workers, generation %d", self.num_workers, self.generation)
            systemd.ready(f"serving: {self.num_workers} workers, generation {self.generation}"
                          + (f"; last reload refused: {self.last_reload_error}" if self.last_reload_error else ""))

    def _stop_worker(self, w: WorkerProc, sig: int = signal.SIGTERM) -> None:
        w.stopping = True
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.health_pid:
                self._on_health_exit(status)
                continue
            if pid == self.admin_pid:
                self._on_admin_exit(status)
                continue
            self._retire_stats_of(pid)
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            self._publish_workers()
            if w.ready_fd >= 0:
                os.close(w.ready_fd)
            self._close_retired()
            if w.stopping or self.state != "running":
                log.debug("worker %d exited (%s)", pid, _describe(status))
                continue
            lived = time.monotonic() - w.started
            log.error("worker %d (slot %d) died: %s; respawning", pid, w.slot, _describe(status))
            if w.generation == self.generation and w.slot < self.num_workers:
                b = 0.0 if lived >= STABLE_AFTER_S else min(MAX_BACKOFF_S, max(0.1, 2 * self.backoff.get(w.slot, 0.0)))
                self.backoff[w.slot] = b
                self.respawn_at[w.slot] = time.monotonic() + b

    def _respawn_due(self) -> None:
        now = time.monotonic()
        if self.health_respawn_at and self.health_respawn_at <= now and self.state == "running":
            self.health_respawn_at = 0.0
            self._spawn_health()
        if self.admin_respawn_at and self.admin_respawn_at <= now and self.state == "running":
            self.admin_respawn_at = 0.0
            self._spawn_admin()
        for slot, at in list(self.respawn_at.items()):
            if at <= now and self.state == "running":
                del self.respawn_at[slot]
                if slot < self.num_workers:
                    self._spawn(slot)

    def _grow(self) -> None:
        slot = self.num_workers
        self.num_workers += 1
        log.info("SIGTTIN: workers %d -> %d", slot, self.num_workers)
        self._spawn(slot)

    def _shrink(self) -> None:
        if self.num_workers <= 1:
            log.warning("SIGTTOU: already at one worker")
            return
        self.num_workers -= 1
        log.info("SIGTTOU: workers %d -> %d", self.num_workers + 1, self.num_workers)
        self.respawn_at.pop(self.num_workers, None)
        for w in list(self.workers.values()):
            if w.slot >= self.num_workers and not w.stopping:
                self._stop_worker(w)
        # The removed slot's socket closes with its worker; Linux resets connections still in
        # its accept queue at that moment (none are lost if net.ipv4.tcp_migrate_req=1, which
        # moves them to a sibling socket). Respawn and reload keep the socket, so they lose none.
        for ls in self.listeners.values():
            ls.shrink_to(self.num_workers)

    # ---- the health-check process -------------------------------------------------------------
    def _needs_health(self) -> bool:
        return any(c.health_checks or c.outlier_detection or c.type in ("STRICT_DNS", "LOGICAL_DNS")
                   for c in self.bootstrap.clusters.values())

    def _spawn_health(self) -> None:
        if not self._needs_health():
            return
        store, stats_slot = self.stats, self.stats.alloc_slot()

        def child() -> int:
            self._become_worker(-1)
            from proxy.health import process
            return process.run(self.bootstrap, self.table, (self.registry, store.view(stats_slot)))

        pid = _fork(child)
        self.health_pid = pid
        self.health_slot = (store, stats_slot)
        self.health_started = time.monotonic()
        log.debug("started health-check process %d", pid)

    def _stop_health(self) -> None:
        pid, self.health_pid = self.health_pid, 0
        self.health_respawn_at = 0.0
        if pid:
            self._retiring[pid] = self.health_slot
            self.health_slot = (None, -1)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # ---- the admin process ----------------------------------------------------------------------
    def _spawn_admin(self) -> None:
        if self.admin_sock is None:
            return
        store, stats_slot = self.stats, self.stats.alloc_slot()

        def child() -> int:
            self._become_worker(-1)
            from proxy.admin import server as admin_server
            return admin_server.run(self.bootstrap, self.table, self.layout, store, self.registry, self.control,
                                    allow_remote=self.opts.extra.get("admin_allow_remote", False),
                                    sock=self.admin_sock, stats_slot=stats_slot)

        self.admin_pid = _fork(child)
        self.admin_slot = (store, stats_slot)
        self.admin_started = time.monotonic()
        log.debug("started admin process %d", self.admin_pid)

    def _stop_admin(self) -> None:
        pid, self.admin_pid = self.admin_pid, 0
        self.admin_respawn_at = 0.0
        if pid:
            self._retiring[pid] = self.admin_slot
            self.admin_slot = (None, -1)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _on_admin_exit(self, status: int) -> None:
        self.admin_pid = 0
        self._retire(self.admin_slot)
        self.admin_slot = (None, -1)
        if self.state != "running":
            return
        lived = time.monotonic() - self.admin_started
        log.error("admin process died: %s; respawning", _describe(status))
        self.admin_backoff = 0.0 if lived >= STABLE_AFTER_S else min(MAX_BACKOFF_S, max(0.1, 2 * self.admin_backoff))
        self.admin_respawn_at = time.monotonic() + self.admin_backoff

    # ---- stats slots ----------------------------------------------------------------------------
    def _new_stats(self, bootstrap: Bootstrap) -> None:
        """A registry (and, when the stat names changed, a store) for `bootstrap`: sized for every
        process that can be alive at once across a reload (old and new workers, helpers)."""
        from proxy.stats import StatRegistry
        from proxy.stats.registry import carry_over
        registry = StatRegistry.for_bootstrap(bootstrap)
        if self.registry is not None and registry.signature == self.registry.signature:
            self.registry = registry
            return
        store = registry.make_store(max(64, 4 * self.num_workers + 8))
        if self.registry is not None:
            carry_over(self.registry, self.stats, registry, store)
        self.registry, self.stats = registry, store

    def _retire(self, owner) -> None:
        store, slot = owner
        if store is not None and slot >= 0:
            store.retire(slot)   # the exited process's counters fold into the retired slot

    def _retire_stats_of(self, pid: int) -> None:
        w = self.workers.get(pid)
        if w is not None:
            _return_breaker_units(w)
            self._retire((w.store, w.stats_slot))
        elif pid in self._retiring:
            self._retire(self._retiring.pop(pid))

    def _publish_workers(self) -> None:
        self.control.set_workers([w.pid for w in sorted(self.workers.values(), key=lambda w: w.slot)
                                  if not w.stopping])
        self.control.set_concurrency(self.num_workers)

    def _on_health_exit(self, status: int) -> None:
        self.health_pid = 0
        self._retire(self.health_slot)
        self.health_slot = (None, -1)
        if self.state != "running":
            return
        # The table keeps its last state meanwhile: workers route on it as it was.
        lived = time.monotonic() - self.health_started
        log.error("health-check process died: %s; respawning", _describe(status))
        self.health_backoff = 0.0 if lived >= STABLE_AFTER_S else min(MAX_BACKOFF_S, max(0.1, 2 * self.health_backoff))
        self.health_respawn_at = time.monotonic() + self.health_backoff

    # ---- reload ----------------------------------------------------------------------------
    def _reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP: no config file to re-read (embedded config)")
            return
        systemd.reloading(f"reloading {self.config_path}")
        self._reload_config()
        self.control.set_reload_error(self.last_reload_error)
        if self.last_reload_error is not None:
            # nothing changed: tell systemd we are serving as before
            systemd.ready(f"serving: {self.num_workers} workers, generation {self.generation}; "
                          f"reload refused: {self.last_reload_error}")

    def _reload_config(self) -> None:
        try:
            new = load_file(self.config_path)
        except ConfigError as e:
            self.last_reload_error = str(e)
            log.error("reload refused, still serving the previous config: %s", e)
            return
        except OSError as e:
            self.last_reload_error = str(e)
            log.error("reload refused, still serving the previous config: %s", e)
            return
        try:
            self._open_listeners(new)
        except OSError as e:
            self.last_reload_error = str(e)
            log.error("reload refused, cannot open listener: %s", e)
            return
        try:
            tls.prepare_server_contexts(new)
        except (ssl.SSLError, OSError) as e:
            self.last_reload_error = f"cannot load a listener's certificates: {e}"
            log.error("reload refused, still serving the previous config: %s", self.last_reload_error)
            return
        for warning in new.warnings:
            log.warning("config: %s", warning)
        self.last_reload_error = None
        self.bootstrap = new
        self.generation += 1
        # a new table for the new generation, carrying the state of hosts that stay; the old
        # generation keeps reading the old one while it drains
        self._stop_health()
        self._stop_admin()
        self.table, self.layout = cluster_manager.build_table(new, self.table, self.layout)
        self.filter_state = SharedFilterState(new)   # Envoy too starts new buckets on a config change
        self._new_stats(new)
        self._spawn_health()
        self._spawn_admin()
        self.announced_ready = False
        log.info("SIGHUP: starting generation %d", self.generation)
        for slot in range(self.num_workers):
            self.respawn_at.pop(slot, None)
            self._spawn(slot)

    def _open_listeners(self, bootstrap: Bootstrap) -> None:
        """Keep the sockets of listeners that stay; open new ones; retire those that went."""
        wanted: dict[tuple, ListenerSockets] = {}
        opened: list[ListenerSockets] = []
        try:
            for lc in bootstrap.listeners:
                ls = self._existing_sockets(lc)
                if ls is None:
                    ls = ListenerSockets(lc.name, lc.address, lc.port)
                    opened.append(ls)
                ls.name = lc.name
                ls.ensure_slots(self.num_workers)
                wanted[ls.key()] = ls
                lc.port = ls.port   # workers see the bound port (config may say 0)
        except OSError:
            for ls in opened:
                ls.close()
            raise
        kept = {id(ls) for ls in wanted.values()}
        for ls in self.listeners.values():
            if id(ls) not in kept:
                self.retired.append((self.generation + 1, ls))
        self.listeners = wanted

    def _existing_sockets(self, lc) -> ListenerSockets | None:
        """The sockets a listener of the new config can keep: same address and port (a port of 0
        matches the port it was given), else, for port 0, the same name."""
        for ls in self.listeners.values():
            if ls.address == lc.address and lc.port != 0 and lc.port in (ls.port, ls.configured_port):
                return ls
        for ls in self.listeners.values():
            if ls.address == lc.address and lc.port == 0 and ls.name == lc.name:
                return ls
        return None

    def _close_retired(self) -> None:
        keep = []
        for gen, ls in self.retired:
            if any(w.generation < gen for w in self.workers.values()):
                keep.append((gen, ls))
            else:
                ls.close()
        self.retired = keep

    # ---- stop ------------------------------------------------------------------------------
    def _stop(self, graceful: bool) -> None:
        if self.state in ("stopping", "stopped"):
            if not graceful:
                for w in self.workers.values():
                    self._stop_worker(w, signal.SIGKILL)
            return
        self.state = "stopping"
        systemd.stopping("draining" if graceful else "stopping")
        self.control.set_state("DRAINING")
        self._stop_health()
        self._stop_admin()
        log.info("%s stop: draining %d workers (up to %.0fs)", "graceful" if graceful else "immediate",
                 len(self.workers), self.opts.drain_time_s if graceful else 0)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for w in self.workers.values():
            self._stop_worker(w, sig)
        deadline = time.monotonic() + (self.opts.drain_time_s if graceful else 1.0)
        while self.workers and time.monotonic() < deadline:
            self._reap()
            if self.signals and signal.SIGQUIT in self.signals:
                break
            try:
                select.select([self._wake_r], [], [], 0.1)
            except InterruptedError:
                pass
            self._drain_wake()
        for w in list(self.workers.values()):
            log.warning("worker %d did not finish in time; killing it", w.pid)
            self._stop_worker(w, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)
        self.state = "stopped"
        log.info("stopped")


def _fork(body) -> int:
    """Fork a child that runs body() and exits with what it returns; the parent gets the pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def pin_to_cpu(slot: int) -> None:
    """--cpu-affinity: worker i runs on the i-th CPU this process may use (modulo their count)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[slot % len(cpus)]})


def raise_open_file_limit() -> None:
    """Every connection is a file descriptor (two for a proxied one): raise the soft limit to
    the hard one, as nginx's worker_rlimit_nofile would, and say so when that is low."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, e)
    if soft < 65536:
        log.warning("open-file limit is %d: at most about %d proxied connections per process; "
                    "raise it (systemd: LimitNOFILE=, shell: ulimit -n) for more", soft, soft // 2)


def _return_breaker_units(w: WorkerProc) -> None:
    """A worker that died (or exited) with requests or connections open still holds their
    circuit-breaker units in the shared table: its own gauges say how many; give them back."""
    if w.table is None or w.registry is None or w.store is None or w.stats_slot < 0:
        return
    for name in w.registry.clusters:
        try:
            idx = w.registry.cluster_indexes(name)
            c = w.layout.clusters[name].index
            w.table.circuit_breaker_return(
                c, w.store.slot_gauge(w.stats_slot, idx.upstream_rq_active),
                w.store.slot_gauge(w.stats_slot, idx.upstream_cx_active),
                w.store.slot_gauge(w.stats_slot, idx.upstream_rq_pending_active))
        except (KeyError, IndexError, AttributeError) as e:
            log.debug("circuit breaker units of worker %d: %s", w.pid, e)
    if w.filter_state is not None:
        w.filter_state.give_back(w.registry, w.store, w.stats_slot)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit code {os.WEXITSTATUS(status)}"
