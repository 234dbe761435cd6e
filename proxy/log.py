"""Logging to stderr at Envoy's --log-level names."""
import logging
import sys

TRACE = 5
LEVELS = {
    "trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
    "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}


def setup(level: str) -> None:
    logging.addLevelName(TRACE, "TRACE")
    handler = logging.StreamHandler(sys.stderr)
    # Envoy's default shape: [time][pid][level][logger] message
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s.%(msecs)03d][%(process)d][%(levelname)s][%(name)s] %(message)s",
        "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # the HTTP/2 codec logs every frame and header at DEBUG: only its warnings are ours to show,
    # except at trace level
    for name in ("h2", "hpack", "hyperframe"):
        logging.getLogger(name).setLevel(LEVELS[level] if LEVELS[level] <= TRACE else logging.WARNING)
