"""The vocabulary the schema tables are written in: field kinds, fields and messages.

Pure data; `proxy.config.validate` gives it meaning. Each kind mirrors a protobuf type as
Envoy's proto3-JSON/YAML reader accepts it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Str:
    min_len: int = 0
    max_len: Optional[int] = None
    # Envoy's well_known_regex rules: "header_name" (an HTTP token, optionally ':'-prefixed)
    # or "header_value" (no NUL/CR/LF).
    well_known: Optional[str] = None


@dataclass(frozen=True)
class Int:
    type_name: str          # "uint32", "int64"... for messages
    lo: int
    hi: int


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class Double:
    lo: Optional[float] = None
    hi: Optional[float] = None


@dataclass(frozen=True)
class Duration:
    """Normalised to float seconds. Always >= 0; `gt` is the exclusive lower bound if any."""
    gt: Optional[float] = None


@dataclass(frozen=True)
class Bytes:
    """proto `bytes`: base64 text in JSON/YAML; normalised to `bytes`."""


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]
    # value -> why cyvoy refuses it although Envoy accepts it
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Percent:
    """envoy.type.v3.Percent: {value: 0..100}; normalised to the float."""


@dataclass(frozen=True)
class Msg:
    name: str               # key into the schema's message table


@dataclass(frozen=True)
class List:
    item: Any
    min_items: int = 0
    max_items: Optional[int] = None


@dataclass(frozen=True)
class Struct:
    """google.protobuf.Struct / Value: free-form, kept as read."""


@dataclass(frozen=True)
class AnyMsg:
    """google.protobuf.Any that cyvoy keeps without interpreting (must carry an "@type")."""


@dataclass(frozen=True)
class TypedConfig:
    """The `typed_config` of an extension ({name, typed_config} pair). `category` names the
    extension table in `proxy.config.extensions` that resolves it; the validated value is
    {"extension": <canonical name>, "config": <validated message>}."""
    category: str


@dataclass(frozen=True)
class TypedConfigMap:
    """map<string, google.protobuf.Any> keyed by extension name (typed_per_filter_config): each
    value validated as the `typed_config` of that extension; the validated value is
    {name: {"extension": ..., "config": ...}}."""
    category: str


@dataclass(frozen=True)
class Field:
    kind: Any = None
    default: Any = NO_DEFAULT
    required: bool = False
    oneof: Optional[str] = None
    # Set for Envoy fields cyvoy recognises but refuses: the short reason.
    refused: Optional[str] = None
    # Values of a refused field that are accepted anyway because writing them means the same as
    # leaving the field out (usually Envoy's default). Checked after parsing with `kind`.
    harmless: tuple = ()


@dataclass(frozen=True)
class Message:
    proto: str                                  # Envoy's full message name, for reference
    fields: dict[str, Field]
    required_oneofs: tuple[str, ...] = ()

    def oneof_members(self, oneof: str, supported_only: bool = False) -> list[str]:
        return [n for n, f in self.fields.items()
                if f.oneof == oneof and not (supported_only and f.refused)]


# Shorthands for the tables.
STRING = Str()
NONEMPTY = Str(min_len=1)
HEADER_NAME = Str(min_len=1, max_len=16384, well_known="header_name")
HEADER_VALUE = Str(max_len=16384, well_known="header_value")
BOOL = Bool()
UINT32 = Int("uint32", 0, 2**32 - 1)
UINT64 = Int("uint64", 0, 2**64 - 1)
INT64 = Int("int64", -2**63, 2**63 - 1)
PORT = Int("uint32", 0, 65535)
DURATION = Duration()
POSITIVE_DURATION = Duration(gt=0.0)
PERCENT = Percent()
STRUCT = Struct()


def f(kind: Any, default: Any = NO_DEFAULT, *, required: bool = False,
      oneof: Optional[str] = None) -> Field:
    """A field cyvoy supports (or validates for a later feature)."""
    return Field(kind=kind, default=default, required=required, oneof=oneof)


def no(reason: str, kind: Any = None, *harmless: Any, oneof: Optional[str] = None) -> Field:
    """A real Envoy field that cyvoy refuses, with the short reason shown to the user;
    `harmless` values (parsed as `kind`) are accepted as meaning "not set"."""
    return Field(kind=kind, oneof=oneof, refused=reason, harmless=harmless)
