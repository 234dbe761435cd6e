"""Envoy's admin stats formats: /stats (text, ?format=json) and /stats/prometheus.

    status, content_type, body = handle(reader, "/stats", "usedonly&filter=^cluster\\.")

Query parameters (as Envoy's admin):
  usedonly                 only stats that were written (counter non-zero since start, gauge
                           ever set, histogram with a sample); computed stats count as written
  filter=REGEX             Python `re`, search semantics (Envoy: RE2 partial match)
  format=json|prometheus|text
  type=All|Counters|Gauges|Histograms|TextReadouts   (cyvoy has no text readouts)
  histogram_buckets=cumulative|disjoint|none          (text and json)

Text: `name: value` lines for counters and gauges sorted by name, then one line per histogram
sorted by name: `name: P0(interval,cumulative) P25(..) ... P100(..)` or `No recorded values`;
with histogram_buckets, `B<bound>(interval,cumulative)` per bucket bound instead.

JSON: {"stats": [{"name": ..., "value": ...}, ..., {"histograms": {"supported_quantiles":
[0, 25, ...], "computed_quantiles": [{"name": ..., "values": [{"interval": x|null,
"cumulative": y|null}, ...]}]}}]}; with histogram_buckets: {"histograms": [{"name": ...,
"buckets": [{"upper_bound": b, "interval": n, "cumulative": n}, ...]}]}.

Prometheus (text exposition 0.0.4): `envoy_` + the tag-extracted name (tags.py) with every
character outside [a-zA-Z0-9_] made `_`, tags as labels (`{}` when there are none, as Envoy),
one `# TYPE` line per family; counters, then gauges, then histograms (`_bucket{le=...}`
cumulative including `le="+Inf"`, `_sum` in ms, `_count`), each group sorted by family name.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Union
from urllib.parse import parse_qsl

import orjson

from proxy.stats.reader import BUCKET_BOUNDS, SUPPORTED_QUANTILES, Snapshot, StatsReader
from proxy.stats.tags import prometheus_name

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=UTF-8"

_TYPES = {"all": "All", "counters": "Counters", "gauges": "Gauges", "histograms": "Histograms",
          "textreadouts": "TextReadouts"}


class BadRequest(ValueError):
    """An invalid query parameter (the admin answers 400 with the message)."""


def num(v) -> str:
    """A number as Envoy prints it: shortest form, no trailing .0, `nan`."""
    if isinstance(v, int):
        return str(v)
    if v != v:
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _quantile_label(q: float) -> str:
    return format(100 * q, "g")


def parse_query(query: Union[str, dict, list, tuple, None]) -> dict[str, str]:
    """A query string ("a=1&usedonly") or mapping / pairs -> dict (last value wins)."""
    if query is None:
        return {}
    if isinstance(query, (bytes, bytearray)):
        query = query.decode("latin-1")
    if isinstance(query, str):
        return dict(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    if isinstance(query, dict):
        return {str(k): ("" if v is None else str(v[-1] if isinstance(v, list) else v))
                for k, v in query.items()}
    return {str(k): str(v) for k, v in query}


class Options:
    """Parsed stats query parameters (BadRequest on invalid ones)."""

    def __init__(self, params: dict[str, str]):
        self.usedonly = "usedonly" in params
        f = params.get("filter")
        self.filter: Optional[re.Pattern] = None
        if f:
            try:
                self.filter = re.compile(f)
            except re.error as e:
                raise BadRequest(f"Invalid regex: {e}") from None
        t = params.get("type", "All")
        if t.lower() not in _TYPES:
            raise BadRequest("invalid type= parameter: use All, Counters, Gauges, Histograms "
                             "or TextReadouts")
        self.type = _TYPES[t.lower()]
        hb = params.get("histogram_buckets", "none")
        if hb not in ("none", "cumulative", "disjoint"):
            raise BadRequest("usage: /stats?histogram_buckets=(cumulative|disjoint|none)")
        self.histogram_buckets = hb
        fmt = params.get("format", "text")
        if fmt not in ("text", "json", "prometheus", "html"):
            raise BadRequest(f"invalid format {fmt!r}: use text, json or prometheus")
        self.format = "text" if fmt == "html" else fmt

    def keep(self, name: str, used: bool) -> bool:
        if self.usedonly and not used:
            return False
        return self.filter is None or self.filter.search(name) is not None

    def want(self, kind: str) -> bool:
        if self.type == "All":
            return True
        return {"counter": "Counters", "gauge": "Gauges", "histogram": "Histograms"}[kind] == self.type


def _selected(snap: Snapshot, opt: Options):
    stats = sorted((s for s in snap.stats if opt.want(s.kind) and opt.keep(s.name, s.used)),
                   key=lambda s: s.name)
    hists = sorted((h for h in snap.histograms
                    if opt.want("histogram") and opt.keep(h.name, h.used)),
                   key=lambda h: h.name)
    return stats, hists


def _bucket_counts(h, mode: str):
    """[(bound, interval count, cumulative count)] for the text / json bucket modes."""
    nb = len(BUCKET_BOUNDS)
    iv = h.interval or [0] * len(h.buckets)
    out = []
    ci = cc = 0
    for b in range(nb):
        if mode == "cumulative":
            ci += iv[b]
            cc += h.buckets[b]
            out.append((BUCKET_BOUNDS[b], ci, cc))
        else:
            out.append((BUCKET_BOUNDS[b], iv[b], h.buckets[b]))
    return out


def render_text(snap: Snapshot, opt: Options) -> str:
    stats, hists = _selected(snap, opt)
    lines = [f"{s.name}: {s.value}" for s in stats]
    for h in hists:
        if not h.used:
            lines.append(f"{h.name}: No recorded values")
        elif opt.histogram_buckets != "none":
            lines.append(f"{h.name}: " + " ".join(
                f"B{format(b, 'g')}({i},{c})" for b, i, c in _bucket_counts(h, opt.histogram_buckets)))
        else:
            iq, cq = h.interval_quantiles(), h.quantiles()
            lines.append(f"{h.name}: " + " ".join(
                f"P{_quantile_label(q)}({num(i)},{num(c)})"
                for q, i, c in zip(SUPPORTED_QUANTILES, iq, cq)))
    return "".join(line + "\n" for line in lines)


def _json_num(v):
    if isinstance(v, float):
        if v != v or math.isinf(v):
            return None
        if v == int(v) and abs(v) < 1e15:
            return int(v)
    return v


def render_json(snap: Snapshot, opt: Options) -> bytes:
    stats, hists = _selected(snap, opt)
    out: list = [{"name": s.name, "value": s.value} for s in stats]
    if hists:
        if opt.histogram_buckets != "none":
            out.append({"histograms": [
                {"name": h.name, "buckets": [
                    {"upper_bound": _json_num(b), "interval": i, "cumulative": c}
                    for b, i, c in _bucket_counts(h, opt.histogram_buckets)]}
                for h in hists]})
        else:
            computed = []
            for h in hists:
                iq, cq = h.interval_quantiles(), h.quantiles()
                computed.append({"name": h.name, "values": [
                    {"interval": _json_num(i), "cumulative": _json_num(c)} for i, c in zip(iq, cq)]})
            out.append({"histograms": {
                "supported_quantiles": [_json_num(100 * q) for q in SUPPORTED_QUANTILES],
                "computed_quantiles": computed}})
    return orjson.dumps({"stats": out})


def render_prometheus(snap: Snapshot, opt: Options) -> str:
    stats, hists = _selected(snap, opt)
    families: dict[str, tuple[str, list]] = {}
    for s in stats:
        fam, labels = prometheus_name(s.name)
        entry = families.setdefault(fam, (s.kind, []))
        if entry[0] != s.kind:
            continue    # one TYPE per family; cannot happen with cyvoy's stat names
        entry[1].append((labels, s.value))
    hist_families: dict[str, list] = {}
    for h in hists:
        fam, labels = prometheus_name(h.name)
        if fam in families:
            continue
        hist_families.setdefault(fam, []).append((labels, h))
    out: list[str] = []
    for kind in ("counter", "gauge"):
        for fam in sorted(f for f, (k, _) in families.items() if k == kind):
            out.append(f"# TYPE {fam} {kind}\n")
            for labels, value in sorted(families[fam][1]):
                out.append(f"{fam}{{{labels}}} {value}\n")
    for fam in sorted(hist_families):
        out.append(f"# TYPE {fam} histogram\n")
        for labels, h in sorted(hist_families[fam], key=lambda x: x[0]):
            sep = "," if labels else ""
            cum = 0
            for b, c in zip(BUCKET_BOUNDS, h.buckets):
                cum += c
                out.append(f'{fam}_bucket{{{labels}{sep}le="{format(b, ".32g")}"}} {cum}\n')
            out.append(f'{fam}_bucket{{{labels}{sep}le="+Inf"}} {h.count}\n')
            out.append(f"{fam}_sum{{{labels}}} {num(h.sum_ms)}\n")
            out.append(f"{fam}_count{{{labels}}} {h.count}\n")
    return "".join(out)


def render(snap: Snapshot, opt: Options) -> tuple[str, bytes]:
    """(content type, body) in opt.format."""
    if opt.format == "json":
        return JSON, render_json(snap, opt)
    if opt.format == "prometheus":
        return PROMETHEUS, render_prometheus(snap, opt).encode()
    return TEXT, render_text(snap, opt).encode()


def handle(reader: StatsReader, path: str, query=None, method: str = "GET") -> tuple[int, str, bytes]:
    """The admin endpoints /stats, /stats/prometheus and /reset_counters (POST only):
    (status, content type, body). Other paths: 404."""
    path = path.split("?", 1)[0]
    if path == "/reset_counters":
        if method.upper() != "POST":
            return 400, TEXT, b"This endpoint requires POST\n"
        reader.reset_counters()
        return 200, TEXT, b"OK\n"
    if path not in ("/stats", "/stats/prometheus"):
        return 404, TEXT, b"not found\n"
    params = parse_query(query)
    if path == "/stats/prometheus":
        params["format"] = "prometheus"
    try:
        opt = Options(params)
    except BadRequest as e:
        return 400, TEXT, (str(e) + "\n").encode()
    ctype, body = render(reader.snapshot(), opt)
    return 200, ctype, body
