"""google.protobuf.Duration as Envoy reads it from YAML/JSON, as float seconds.

The proto3 JSON form is a string of seconds with an "s" suffix ("5s", "0.25s"); a
{seconds, nanos} mapping is the structured form. Envoy accepts nothing else, so "100ms" or a
bare number is refused with the equivalent Envoy spelling as a hint.
"""
from __future__ import annotations

import re
from typing import Any

_JSON_FORM = re.compile(r"^(-?)(\d+)(?:\.(\d{1,9}))?s$")
_OTHER_UNITS = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|m|min|h|d)$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "m": 60, "min": 60, "h": 3600,
                 "d": 86400}
# google.protobuf.Duration's documented range: +-10,000 years.
MAX_SECONDS = 315_576_000_000


class DurationError(ValueError):
    pass


def _seconds_text(seconds: float) -> str:
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _hint(value: Any) -> str:
    """How the user's value would be written as an Envoy duration."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"e.g. '{_seconds_text(float(value))}' if {value} is meant in seconds"
    m = _OTHER_UNITS.match(str(value).strip())
    if m:
        return f"e.g. '{_seconds_text(abs(float(m.group(1))) * _UNIT_SECONDS[m.group(2)])}'"
    return "e.g. '0.1s' or '5s'"


def parse_duration(value: Any) -> float:
    """Seconds as a float; raises DurationError with a user-facing reason."""
    if isinstance(value, dict):
        return _parse_mapping(value)
    if not isinstance(value, str):
        raise DurationError(
            f"invalid duration {value!r}: Envoy durations are strings of seconds with an 's' "
            f"suffix, {_hint(value)}")
    m = _JSON_FORM.match(value.strip())
    if not m:
        raise DurationError(
            f"invalid duration {value!r}: Envoy durations are seconds with an 's' suffix, "
            f"{_hint(value)}")
    sign, whole, frac = m.groups()
    seconds = int(whole) + (int(frac.ljust(9, "0")) / 1e9 if frac else 0.0)
    if sign and seconds:
        raise DurationError(f"invalid duration {value!r}: must not be negative")
    if seconds > MAX_SECONDS:
        raise DurationError(f"invalid duration {value!r}: larger than {MAX_SECONDS}s")
    return seconds


def _parse_mapping(value: dict) -> float:
    unknown = set(value) - {"seconds", "nanos"}
    if unknown:
        raise DurationError(
            f"invalid duration {value!r}: a duration mapping has only 'seconds' and 'nanos'")
    seconds, nanos = value.get("seconds", 0), value.get("nanos", 0)
    for name, part in (("seconds", seconds), ("nanos", nanos)):
        # proto3 JSON writes 64-bit integers as strings, so accept both.
        if isinstance(part, str) and re.fullmatch(r"-?\d+", part):
            part = int(part)
        if not isinstance(part, int) or isinstance(part, bool):
            raise DurationError(f"invalid duration {value!r}: '{name}' must be an integer")
        if part < 0:
            raise DurationError(f"invalid duration {value!r}: must not be negative")
        if name == "seconds":
            seconds = part
        else:
            nanos = part
    if nanos > 999_999_999:
        raise DurationError(f"invalid duration {value!r}: 'nanos' must be below 1000000000")
    if seconds > MAX_SECONDS:
        raise DurationError(f"invalid duration {value!r}: larger than {MAX_SECONDS}s")
    return seconds + nanos / 1e9


def format_duration(seconds: float) -> str:
    """Envoy's spelling of `seconds`, for messages."""
    return _seconds_text(seconds)
