"""Start the real cyvoy (master + workers) on loopback for a test, and talk to it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def hcm(routes_vhosts: list, **fields) -> dict:
    cfg = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress_http",
        "route_config": {"name": "local_route", "virtual_hosts": routes_vhosts},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    cfg.update(fields)
    return cfg


def listener(name: str, port: int, hcm_cfg: dict) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm_cfg}]}],
    }


def cluster(name: str, ports: list, **fields) -> dict:
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
            for p in ports]}]},
    }
    c.update(fields)
    return c


def simple_config(upstream_ports: list, route: dict | None = None, hcm_fields: dict | None = None,
                  cluster_fields: dict | None = None, port: int = 0) -> dict:
    """One listener, one virtual host "*", prefix "/" to cluster "backend"."""
    route = route or {"cluster": "backend"}
    vh = [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}]
    return {
        "static_resources": {
            "listeners": [listener("main", port, hcm(vh, **(hcm_fields or {})))],
            "clusters": [cluster("backend", upstream_ports, **(cluster_fields or {}))],
        }
    }


def wait_for(cond, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll `cond` until it is true or `timeout` passes; True if it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proxy:
    """The real master and workers, started as `python -m proxy`, stderr captured to a file."""

    def __init__(self, config: dict, tmp_path: Path, workers: int = 2, drain_time_s: float = 5,
                 log_level: str = "debug", extra_args: tuple = (), wrap: tuple = (), env: dict | None = None):
        self.tmp = tmp_path
        self.config_path = tmp_path / "cyvoy.yaml"
        self.log_path = tmp_path / "cyvoy.log"
        self.pid_file = tmp_path / "cyvoy.pid"
        self.write_config(config)
        self.listener_ports = {}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "proxy", "-c", str(self.config_path), "--workers", str(workers),
             "--drain-time-s", str(drain_time_s), "--log-level", log_level, "--pid-file", str(self.pid_file),
             *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True,
            env={**os.environ, **(env or {})})
        self.wait_log("cyvoy ready", 20)
        for line in self.log().splitlines():
            if "listener '" in line and "' on " in line:
                name = line.split("listener '", 1)[1].split("'", 1)[0]
                self.listener_ports[name] = int(line.rsplit(":", 1)[1])

    def write_config(self, config: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def port(self) -> int:
        return next(iter(self.listener_ports.values()))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"cyvoy exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.02)
        raise TimeoutError(f"no {text!r} in cyvoy's log after {timeout}s:\n{self.log()[-4000:]}")

    def workers(self) -> list[psutil.Process]:
        try:
            return [c for c in psutil.Process(self.proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def reload(self, config: dict | None = None, timeout: float = 20) -> None:
        n = self.log().count("cyvoy ready")
        if config is not None:
            self.write_config(config)
        self.signal(signal.SIGHUP)
        self.wait_log("cyvoy ready", timeout, count=n + 1)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)


def raw_request(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything the proxy answers until it closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)
