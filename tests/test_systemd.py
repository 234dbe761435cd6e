"""Running as a system service (issue 5, item 5): the test plays systemd's part."""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from tests.harness import ROOT, simple_config


def read_notifications(sock: socket.socket, until: str, timeout: float = 20.0) -> list[str]:
    sock.settimeout(timeout)
    got = []
    while True:
        msg = sock.recv(4096).decode()
        got.append(msg)
        if until in msg.split("\n"):
            return got


def test_sd_notify_sequence_ready_reloading_ready_stopping(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        p = proxy(simple_config([up.port]), workers=2, env={"NOTIFY_SOCKET": path})
        first = read_notifications(sock, "READY=1")
        assert "STATUS=serving: 2 workers, generation 0" in first[-1]
        assert f"MAINPID={p.proc.pid}" in first[-1]
        p.signal(signal.SIGHUP)
        reload_msgs = read_notifications(sock, "READY=1")
        assert reload_msgs[0].startswith("RELOADING=1")
        assert "generation 1" in reload_msgs[-1]
        p.signal(signal.SIGTERM)
        stop = read_notifications(sock, "STOPPING=1")
        assert stop[-1].startswith("STOPPING=1")
        assert p.proc.wait(15) == 0
    finally:
        sock.close()


def test_refused_reload_still_answers_ready_with_the_reason(tmp_path, upstreams, proxy):
    (up,) = upstreams(1)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        p = proxy(simple_config([up.port]), workers=1, env={"NOTIFY_SOCKET": path})
        read_notifications(sock, "READY=1")
        p.config_path.write_text("static_resources: {clusters: [{name: a, lb_polcy: x}]}\n")
        p.signal(signal.SIGHUP)
        msgs = read_notifications(sock, "READY=1")
        assert msgs[0].startswith("RELOADING=1")
        assert "reload refused: static_resources.clusters[0].lb_polcy" in msgs[-1]
    finally:
        sock.close()


def test_cyvoy_reload_signals_the_master_named_in_the_pid_file(upstreams, proxy):
    import subprocess
    import sys
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=1)
    r = subprocess.run([sys.executable, "-m", "proxy", "--reload", "--pid-file", str(p.pid_file)],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    p.wait_log("SIGHUP: starting generation 1")


def test_cpu_affinity_pins_each_worker_to_one_cpu(upstreams, proxy):
    (up,) = upstreams(1)
    p = proxy(simple_config([up.port]), workers=2, extra_args=("--cpu-affinity",))
    cpus = sorted(os.sched_getaffinity(0))
    pinned = sorted(tuple(w.cpu_affinity()) for w in p.workers())
    assert all(len(c) == 1 for c in pinned)
    if len(cpus) >= 2:
        assert {c[0] for c in pinned} == set(cpus[:2])


def test_systemd_unit_has_the_settings_a_notify_service_needs():
    unit = (ROOT / "packaging" / "cyvoy.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM",
                 "LimitNOFILE=1048576", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "DynamicUser=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
        assert line in unit.splitlines(), line
    assert Path(ROOT / "packaging" / "cyvoy.service").exists()
