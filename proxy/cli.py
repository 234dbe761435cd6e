"""`cyvoy` / `python -m proxy`: Envoy's command line, where it applies."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from proxy import __version__
from proxy.log import LEVELS, setup as setup_logging

log = logging.getLogger("cyvoy")


def _workers(value: str) -> int:
    if value == "auto":
        return default_workers()
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def default_workers() -> int:
    # Envoy's --concurrency default: the CPUs this process may run on.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cyvoy", description="cyvoy: a reverse proxy reading Envoy v3 config")
    p.add_argument("-c", "--config-path", help="Envoy v3 bootstrap file (YAML or JSON)")
    p.add_argument("--mode", choices=("serve", "validate"), default="serve",
                   help="validate: check the config and exit 0/1, as Envoy's --mode validate")
    p.add_argument("--workers", "--concurrency", dest="workers", type=_workers, default=None,
                   metavar="N", help="worker processes (default: the CPUs this process may use; 'auto' likewise)")
    p.add_argument("--drain-time-s", type=float, default=600.0,
                   help="on SIGTERM/SIGINT and reload, how long in-flight requests may take (default 600, as Envoy)")
    p.add_argument("--pid-file", help="write the master's pid here")
    p.add_argument("--reload", action="store_true",
                   help="signal the running master named by --pid-file to reload its config, then exit")
    p.add_argument("-l", "--log-level", choices=sorted(LEVELS), default="info")
    p.add_argument("--cpu-affinity", action="store_true",
                   help="pin worker i to the i-th CPU this process may run on")
    p.add_argument("--admin-allow-remote", action="store_true",
                   help="let the admin interface listen on a non-loopback address (it is loopback-only otherwise)")
    p.add_argument("--demo", action="store_true",
                   help="serve the embedded default config and start its demo upstreams (what `make run` does)")
    p.add_argument("--version", action="version", version=f"cyvoy {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)

    if args.reload:
        return _signal_running(args.pid_file, signal.SIGHUP)

    from proxy.config import ConfigError, load_file, load_text

    demo = None
    try:
        if args.config_path:
            bootstrap = load_file(args.config_path)
        elif args.demo or args.mode == "validate":
            from proxy import demo as demo_mod
            bootstrap = load_text(demo_mod.default_config_text())
            demo = demo_mod
        else:
            print("cyvoy: no config given: use -c FILE (Envoy v3 YAML/JSON), or --demo", file=sys.stderr)
            return 1
    except ConfigError as e:
        print(f"cyvoy: invalid config: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cyvoy: cannot read config: {e}", file=sys.stderr)
        return 1

    if args.mode == "validate":
        print(f"configuration '{args.config_path or '<embedded>'}' OK")
        return 0

    for w in bootstrap.warnings:
        log.warning("config: %s", w)

    from proxy.master import Master, Options
    opts = Options(workers=args.workers or default_workers(), drain_time_s=args.drain_time_s,
                   pid_file=args.pid_file, log_level=args.log_level, cpu_affinity=args.cpu_affinity,
                   extra={"admin_allow_remote": args.admin_allow_remote})
    upstreams = demo.start_upstreams() if (demo and args.demo) else None
    try:
        return Master(args.config_path, bootstrap, opts).run()
    finally:
        if upstreams:
            upstreams.stop()


def _signal_running(pid_file: str | None, sig: int) -> int:
    if not pid_file:
        print("cyvoy: --reload needs --pid-file", file=sys.stderr)
        return 1
    try:
        pid = int(open(pid_file).read().strip())
        os.kill(pid, sig)
    except (OSError, ValueError) as e:
        print(f"cyvoy: cannot signal the master in {pid_file}: {e}", file=sys.stderr)
        return 1
    return 0
