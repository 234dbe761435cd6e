"""Route selection: virtual host by Host, then the first matching route (Envoy's RouteConfiguration).

Everything that can be decided at config load is decided here once: domains are sorted into
Envoy's search order, header edits are pre-rendered to bytes, timeouts to header lines. The
result is stored in the fast path's classes (proxy/_fastpath/routes.pyx: RouteEntry, Target,
VirtualHostTable, RouteMatcher), which the connection manager reads per request at C speed;
from Python, `RouteTable.match(host, path, head)` returns the same `RouteEntry`.
"""
from __future__ import annotations

import random

from proxy._fastpath.routes import RouteEntry, RouteMatcher, Target, VirtualHostTable
from proxy.config import model
from proxy.config.routes import GRPC_RETRY_ON

# Envoy's redirect response codes (route.v3.RedirectAction.RedirectResponseCode)
DIRECT, REDIRECT, FORWARD = 0, 1, 2


def _header_line(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("latin-1")


class HeaderPlan:
    """Pre-rendered header edits for one direction (request or response), merged over levels.

    `add` is appended as is; `if_absent` lines are added only when the header is missing;
    `remove` (lower-case bytes) are filtered out of the forwarded block, which includes the keys
    of OVERWRITE_* options. Envoy applies the most specific level last (route, then virtual host,
    then route configuration, unless most_specific_header_mutations_wins): we concatenate in that
    order, the same result for appended headers.
    """
    __slots__ = ("add", "if_absent", "remove", "if_exists")

    def __init__(self, options: list[model.HeaderValueOption], remove: list[str]):
        add = []
        self.if_absent: list[tuple[bytes, bytes]] = []
        self.if_exists: list[tuple[bytes, bytes]] = []
        rm = {r.encode() for r in remove}
        for o in options:
            line = _header_line(o.key, o.value)
            if o.append_action == "APPEND_IF_EXISTS_OR_ADD":
                add.append(line)
            elif o.append_action == "ADD_IF_ABSENT":
                self.if_absent.append((o.key.encode(), line))
            elif o.append_action == "OVERWRITE_IF_EXISTS_OR_ADD":
                rm.add(o.key.encode())
                add.append(line)
            elif o.append_action == "OVERWRITE_IF_EXISTS":
                self.if_exists.append((o.key.encode(), line))
        self.add = b"".join(add)
        self.remove = frozenset(rm)

    @property
    def empty(self) -> bool:
        return not (self.add or self.if_absent or self.remove or self.if_exists)

    def apply(self, block: bytes, lookup) -> tuple[bytes, bytes]:
        """Return (block with removals, extra lines). `lookup(name)` tells if a header exists."""
        extra = self.add
        for name, line in self.if_absent:
            if lookup(name) is None:
                extra += line
        if self.if_exists:
            names = set()
            for name, line in self.if_exists:
                if lookup(name) is not None:
                    names.add(name)
                    extra += line
            if names:
                block = remove_lines(block, names)
        if self.remove:
            block = remove_lines(block, self.remove)
        return block, extra


def remove_lines(block: bytes, names) -> bytes:
    if not block:
        return block
    kept = [line for line in block.split(b"\r\n")
            if line and line.split(b":", 1)[0].strip().lower() not in names]
    return b"".join(line + b"\r\n" for line in kept)


def _merge(levels: list[model.HeaderEdits]) -> tuple[HeaderPlan, HeaderPlan]:
    req_add, req_rm, resp_add, resp_rm = [], [], [], []
    for e in levels:  # most specific first
        req_add += e.request_headers_to_add
        req_rm += e.request_headers_to_remove
        resp_add += e.response_headers_to_add
        resp_rm += e.response_headers_to_remove
    return HeaderPlan(req_add, req_rm), HeaderPlan(resp_add, resp_rm)


class RetryPlan:
    """A retry_policy compiled for the request path (the connection reads these attributes)."""
    __slots__ = ("retry_on", "num_retries", "per_try_timeout", "per_try_idle_timeout", "base_interval",
                 "max_interval",
                 "retriable_status_codes", "previous_hosts", "host_selection_retry_max_attempts",
                 "headers_fn", "request_fn", "reset_headers", "reset_max_interval", "grpc_codes")

    def __init__(self, p: model.RetryPolicy | None):
        if p is None:       # a plan only from x-envoy-retry-on: Envoy's RetryPolicy defaults
            p = model.RetryPolicy()
        self.retry_on = p.retry_on
        self.num_retries = p.num_retries
        self.per_try_timeout = p.per_try_timeout
        self.per_try_idle_timeout = p.per_try_idle_timeout
        self.base_interval, self.max_interval = p.base_interval, p.max_interval
        self.retriable_status_codes = p.retriable_status_codes
        self.previous_hosts = p.previous_hosts
        self.host_selection_retry_max_attempts = p.host_selection_retry_max_attempts
        # retriable_headers: a response matching any of them is retried (token retriable-headers)
        self.headers_fn = _any_of(p.retriable_headers)
        # retriable_request_headers: only requests matching one of them are retried
        self.request_fn = _any_of(p.retriable_request_headers)
        self.reset_headers = [(name.encode(), fmt) for name, fmt in p.reset_headers]
        self.reset_max_interval = p.reset_max_interval
        # retry_on's gRPC tokens as grpc-status codes (None: none given)
        self.grpc_codes = frozenset(GRPC_RETRY_ON[t] for t in p.retry_on if t in GRPC_RETRY_ON) or None

    def copy(self) -> "RetryPlan":
        c = RetryPlan.__new__(RetryPlan)
        for name in RetryPlan.__slots__:
            setattr(c, name, getattr(self, name))
        return c


def _any_of(matchers):
    if not matchers:
        return None
    each = [compile_headers([m]) for m in matchers]
    return lambda head: any(f(head) for f in each)


class MirrorTarget:
    """One compiled request_mirror_policies entry."""
    __slots__ = ("cluster", "header", "clusters", "share", "host_suffix")

    def __init__(self, m: model.MirrorPolicy, clusters: dict, runtime: dict):
        self.cluster = clusters[m.cluster] if m.cluster is not None else None
        self.header = m.cluster_header.encode() if m.cluster_header is not None else None
        self.clusters = {name.encode(): c for name, c in clusters.items()} if self.header else None
        share = m.fraction
        if m.fraction_runtime_key and runtime.get(m.fraction_runtime_key) is not None:
            share = (int(runtime[m.fraction_runtime_key]), 100)
        self.share = share           # None: every request
        self.host_suffix = m.host_suffix

    def pick(self, head):
        """The cluster this request is mirrored to, or None (not drawn, or no such cluster)."""
        share = self.share
        if share is not None and not (share[0] >= share[1] or random.randrange(share[1]) < share[0]):
            return None
        if self.header is None:
            return self.cluster
        name = head.get(self.header)
        return self.clusters.get(name) if name is not None else None


class RouteExtras:
    """What few routes use, behind one attribute so that the others pay one lookup for all."""
    __slots__ = ("mirrors", "attempt_in_request", "attempt_in_response")

    def __init__(self, mirrors, attempt_in_request: bool, attempt_in_response: bool):
        self.mirrors = mirrors
        self.attempt_in_request = attempt_in_request
        self.attempt_in_response = attempt_in_response


def _fraction(m: model.RouteMatch, runtime: dict) -> tuple[int, int]:
    """runtime_fraction's share: the static runtime's value for runtime_key (an integer percent,
    checked by the loader) if there is one, else default_value (Envoy's order)."""
    value = runtime.get(m.fraction_runtime_key) if m.fraction_runtime_key else None
    if value is not None:
        return (int(value), 100)
    return m.fraction


def _compile_match(m: model.RouteMatch, runtime: dict | None = None):
    """Return a function (path_bytes, head) -> bool for one route's match."""
    inner = _compile_path_match(m)
    if m.fraction is None:
        return inner
    num, den = _fraction(m, runtime or {})
    randrange = random.randrange
    # a fresh draw per request: the route takes num/den of the requests it would match
    return lambda path, head: inner(path, head) and randrange(den) < num


def compile_headers(matchers: list[model.HeaderMatcher]):
    """A function head -> bool: every matcher matches (Envoy's HeaderMatcher semantics)."""
    headers = [(h.name.encode(), h) for h in matchers]

    def headers_ok(head) -> bool:
        for name, h in headers:
            if head is None:
                return False
            v = head.get(name)
            if h.kind == "present":
                ok = (v is not None) == bool(h.value)
            elif v is None:
                ok = False
            else:
                s = v.decode("latin-1")
                want = h.value if isinstance(h.value, str) else ""
                if h.ignore_case:
                    s, want = s.lower(), want.lower()
                if h.kind == "exact":
                    ok = s == want
                elif h.kind == "prefix":
                    ok = s.startswith(want)
                elif h.kind == "suffix":
                    ok = s.endswith(want)
                elif h.kind == "contains":
                    ok = want in s
                else:  # regex
                    ok = h.regex.fullmatch(s) is not None
            if ok == h.invert_match:
                return False
        return True
    return headers_ok


def _compile_path_match(m: model.RouteMatch):
    headers = m.headers
    headers_ok = compile_headers(m.headers)

    if m.kind == "prefix":
        prefix = m.value.encode()
        if m.case_sensitive:
            if not headers:
                return lambda path, head: path.startswith(prefix)
            return lambda path, head: path.startswith(prefix) and headers_ok(head)
        lp = prefix.lower()
        return lambda path, head: path[:len(lp)].lower() == lp and headers_ok(head)
    if m.kind == "path":
        exact = m.value.encode()
        if m.case_sensitive:
            return lambda path, head: path.split(b"?", 1)[0] == exact and headers_ok(head)
        le = exact.lower()
        return lambda path, head: path.split(b"?", 1)[0].lower() == le and headers_ok(head)
    regex = m.regex
    return lambda path, head: (regex.fullmatch(path.split(b"?", 1)[0].decode("latin-1")) is not None
                               and headers_ok(head))


def compile_hash_policy(policies: list[model.HashPolicy]):
    """A function (request head, peer address bytes) -> 64-bit hash or None, combining the
    route's hash policies as Envoy's HashPolicyImpl::generateHash does: each new hash is XORed
    into the previous one rotated left by one bit; a terminal policy that produced a hash stops.
    Each value is hashed with xxHash64 (seed 0), Envoy's HashUtil::xxHash64."""
    from proxy._fastpath.lb import hash_key

    def header(name):
        key = name.encode()
        return lambda head, peer: (lambda v: None if v is None else hash_key(v))(head.get(key))

    def cookie(name):
        want = name.encode()

        def f(head, peer):
            for line in head.get_all(b"cookie"):
                for part in line.split(b";"):
                    k, sep, v = part.strip().partition(b"=")
                    if sep and k == want:
                        return hash_key(v)
            return None
        return f

    def query(name):
        want = name.encode()

        def f(head, peer):
            q = head.path.partition(b"?")[2]
            for part in q.split(b"&"):
                k, sep, v = part.partition(b"=")
                if k == want:
                    return hash_key(v)
            return None
        return f

    steps = []
    for p in policies:
        if p.kind == "header":
            fn = header(p.name)
        elif p.kind == "cookie":
            fn = cookie(p.name)
        elif p.kind == "query_parameter":
            fn = query(p.name)
        elif p.kind == "source_ip":
            fn = lambda head, peer: hash_key(peer) if peer else None  # noqa: E731
        else:
            continue
        steps.append((fn, p.terminal))
    mask = (1 << 64) - 1

    def generate(head, peer):
        h = None
        for fn, terminal in steps:
            new = fn(head, peer)
            if new is not None:
                old = ((h << 1) | (h >> 63)) & mask if h is not None else 0
                h = old ^ new
            if terminal and h is not None:
                break
        return h
    return generate


class RouteTable(RouteMatcher):
    """A route configuration compiled into the fast path's matcher (proxy/_fastpath/routes.pyx):
    exact domains, "*.example.com" suffixes, "example.*" prefixes, the "*" default."""
    __slots__ = ("runtime",)

    def __init__(self, rc: model.RouteConfiguration, clusters: dict, runtime: dict | None = None,
                 upgrades: dict | None = None):
        super().__init__()
        self.runtime = runtime or {}
        upgrades = upgrades or {}
        for vh in rc.virtual_hosts:
            table = VirtualHostTable(vh.name, [self._entry(r, vh, rc, clusters, self.runtime, upgrades)
                                                for r in vh.routes])
            for d in vh.domains:
                d = d.lower()
                if d == "*":
                    self.default = table
                elif d.startswith("*"):
                    self.suffix.append((d[1:].encode(), table))
                elif d.endswith("*"):
                    self.prefix.append((d[:-1].encode(), table))
                else:
                    self.exact[d.encode()] = table
        # Envoy: longest wildcard first (config_impl.cc findWildcardVirtualHost).
        self.suffix.sort(key=lambda x: -len(x[0]))
        self.prefix.sort(key=lambda x: -len(x[0]))

    @staticmethod
    def _entry(r: model.Route, vh, rc, clusters, runtime, upgrades) -> tuple:
        e = RouteEntry()
        e.name = r.name
        e.match = r.match
        e.match_prefix_len = len(r.match.value.encode()) if r.match.kind == "prefix" else -1
        a = r.action
        e.single = True
        e.hash_fn = None
        e.retry = None
        e.timeout_line = b""
        e.timeout = 0
        e.grpc_timeout_max = -1.0      # max_stream_duration.grpc_timeout_header_max; < 0: unset
        e.grpc_timeout_offset = 0.0
        e.cluster_header = None
        e.extras = None
        e.upgrades = upgrades       # the connection manager's upgrade_configs (a route may override)
        # typed_per_filter_config: the most specific level wins, per filter (route over vhost)
        e.per_filter = {**vh.per_filter, **r.per_filter}
        levels = [r.edits, vh.edits, rc.edits]
        if isinstance(a, model.DirectResponse):
            e.kind = DIRECT
            e.status, e.body = a.status, a.body
            e.targets = [Target(None, *_merge(levels))]
        elif isinstance(a, model.Redirect):
            e.kind = REDIRECT
            e.redirect = a
            e.targets = [Target(None, *_merge(levels))]
        else:
            e.kind = FORWARD
            e.timeout = a.timeout
            e.timeout_line = (b"x-envoy-expected-rq-timeout-ms: %d\r\n" % int(a.timeout * 1000)
                              if a.timeout else b"")
            if a.grpc_timeout_header_max is not None:
                e.grpc_timeout_max = a.grpc_timeout_header_max
                e.grpc_timeout_offset = a.grpc_timeout_header_offset
            e.prefix_rewrite = a.prefix_rewrite.encode() if a.prefix_rewrite is not None else None
            e.host_rewrite = a.host_rewrite_literal.encode() if a.host_rewrite_literal else None
            e.auto_host_rewrite = a.auto_host_rewrite
            e.hash_fn = compile_hash_policy(a.hash_policy) if a.hash_policy else None
            if a.upgrades:       # Envoy: a route's setting for a type overrides the HCM's
                e.upgrades = {**upgrades, **a.upgrades}
            # a route's retry_policy replaces the virtual host's entirely (not merged)
            policy = a.retry_policy or vh.retry_policy
            e.retry = RetryPlan(policy) if policy is not None else None
            # request_mirror_policies: the most specific level that has any (not merged)
            policies = a.mirrors or vh.mirrors or rc.mirrors
            mirrors = tuple(MirrorTarget(m, clusters, runtime or {}) for m in policies)
            if mirrors or vh.include_request_attempt_count or vh.include_attempt_count_in_response:
                e.extras = RouteExtras(mirrors, vh.include_request_attempt_count,
                                       vh.include_attempt_count_in_response)
            if a.cluster_header is not None:
                e.single = False
                e.cluster_header = a.cluster_header.encode()
                e.not_found_code = a.cluster_not_found_response_code
                edits = _merge(levels)
                e.header_targets = {name.encode(): Target(c, *edits) for name, c in clusters.items()}
                e.targets = []
            elif a.cluster is not None:
                e.targets = [Target(clusters[a.cluster], *_merge(levels))]
                e.weights = [1]
                e.total_weight = 1
            else:
                e.targets, e.weights = [], []
                acc = 0
                for wc in a.weighted_clusters:
                    acc += wc.weight
                    e.targets.append(Target(clusters[wc.name], *_merge([wc.edits] + levels)))
                    e.weights.append(acc)
                e.total_weight = a.total_weight or acc
                e.single = len(e.targets) == 1
        m = r.match
        plain = (m.value.encode() if (m.kind == "prefix" and m.case_sensitive and not m.headers
                                      and m.fraction is None) else None)
        return (plain, _compile_match(m, runtime), e)
