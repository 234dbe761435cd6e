# The per-request state machines of one worker: a downstream HTTP/1.1 connection (Envoy's HTTP
# connection manager + router) and an upstream connection from a host's pool. Documented in
# connection.pyx; the Python face is proxy/connection_manager.py.
from proxy._fastpath.http1 cimport ChunkedDecoder, RequestHead, ResponseHead
from proxy._fastpath.hosttable cimport HostTable, cyv_ht_cluster
from proxy._fastpath.stats cimport SlotStats
from proxy._fastpath.routes cimport RouteEntry, RouteMatcher, Target
from proxy._fastpath.cluster cimport ClusterBase, HostBase


cdef class HcmBase:
    # what Downstream reads of its http_connection_manager per request, as C fields; the Python
    # face proxy.connection_manager.Hcm computes them once from the config
    cdef public RouteMatcher routes
    cdef public Py_ssize_t max_head
    cdef public bytes server_line
    cdef public list svc_lines      # x-envoy-upstream-service-time + server lines for 0..999 ms
    cdef public bytes scheme
    cdef public bint use_remote_address
    cdef public bint gen_request_id
    cdef public double idle_timeout, headers_timeout, stream_idle_timeout, request_timeout
    cdef public object h2           # proxy.http2.downstream.Http2Server, or None
    cdef public object user_agent   # add_user_agent: node.cluster (bytes), or None


cdef class HcmStats:
    # Envoy's http.<stat_prefix>.* and listener.<address>.* indexes in this process's stats slot
    cdef SlotStats s
    cdef Py_ssize_t cx_total, cx_active, cx_destroy, cx_protocol_error
    cdef Py_ssize_t rq_total, rq_active, rq_1xx, rq_time, rq_timeout, rq_header_timeout
    cdef Py_ssize_t no_route, rq_direct_response, rq_redirect, no_cluster
    cdef Py_ssize_t l_cx_total, l_cx_active, l_cx_destroy, l_cx_overflow


cdef class ClusterStats:
    # Envoy's cluster.<name>.* indexes in this process's stats slot
    cdef SlotStats s
    cdef Py_ssize_t rq_total, rq_active, rq_1xx, rq_code_base, rq_time, rq_timeout
    cdef Py_ssize_t cx_total, cx_active, cx_destroy, cx_connect_fail, cx_connect_timeout
    cdef Py_ssize_t rq_retry, rq_retry_success, rq_retry_limit_exceeded, retry_abandoned
    cdef Py_ssize_t rq_pending_overflow, rq_retry_overflow, cx_overflow, rq_pending_total, rq_pending_active
    cdef Py_ssize_t rq_per_try_timeout
    # circuit breakers (thresholds of priority DEFAULT) over the cluster's shared counters
    cdef cyv_ht_cluster *rec
    cdef long long max_requests, max_retries, min_retry_concurrency
    cdef long long max_connections, max_pending, max_host_connections
    cdef double budget_percent         # < 0: no retry_budget, max_retries applies
    cdef long long retry_limit(self)


cdef class Downstream:
    cdef public object w            # the Worker
    cdef set active                 # the worker's connections with a deadline (its ticker's set)
    cdef public HcmBase hcm         # proxy.connection_manager.Hcm
    cdef public object transport
    cdef public bytes peer
    cdef public bytes buf
    cdef public bint closed
    cdef public int paused
    cdef public bint keep_alive
    cdef public bint draining
    cdef public bint stream         # an HTTP/2 stream's exchange (proxy/http2/downstream.py)
    cdef public object bridge       # grpc_http1_bridge: the held response body (a list), or None
    cdef object bridge_head         # (status, headers, extra, keep) of the held response
    # the request in flight
    cdef public bint in_req
    cdef public long long seq
    cdef public RequestHead head
    cdef public RouteEntry entry
    cdef public Target target
    cdef public Upstream up
    cdef long long body_left
    cdef ChunkedDecoder dec
    cdef public bint req_done
    cdef list pending
    cdef Py_ssize_t pending_size
    cdef public bint resp_started
    cdef int version
    cdef bint is_head
    cdef public double deadline
    cdef public int deadline_kind
    cdef public double last_io
    cdef double req_start
    cdef bint retried
    cdef bytes upstream_head
    cdef bint chunked_out
    cdef bint ambiguous
    # the host picked for the request in flight: its slot in the shared host table
    cdef HostTable table
    cdef long slot
    cdef bint recorded
    cdef double ewma_decay_ns
    # what the access log needs of the request in flight (kept only when the listener logs)
    cdef public bint logging
    cdef public int status
    cdef public str flags
    cdef public long long rx_body
    cdef public long long tx_body
    cdef public double req_end
    cdef double log_now             # when the access log entry is made
    cdef public double resp_first
    cdef public object host
    cdef object peer_addr           # (ip, port) of the client and of our end, for access logs
    cdef object local_addr
    cdef public ResponseHead resp
    cdef public int svc_ms
    cdef HcmStats st
    cdef ClusterStats cst          # the cluster of the request in flight, None before the pick
    cdef bint counted_rq           # downstream_rq_active was raised for the request in flight
    # the route's retry_policy for the request in flight (None: no retries)
    cdef object retry
    cdef int retries_left
    cdef int attempt
    cdef list body_copy            # request body as sent upstream, kept to replay it; None: too big
    cdef Py_ssize_t body_copy_size
    cdef bint sent_upstream        # some byte of the request reached an upstream
    cdef set tried                 # host slots already tried (previous_hosts)
    cdef object hash_key
    cdef double route_deadline
    cdef bint cb_request               # holds one unit of the cluster's max_requests
    cdef bint cb_retry                 # holds one unit of the cluster's max_retries
    cdef bint cb_pending               # holds one unit of max_pending_requests (waits for a connection)
    cdef long long wait_token          # identifies its entry in a host's queue of pending requests
    cdef public bytes filter_extra     # request header lines the HTTP filters add upstream
    cdef list mirrors                  # (cluster, host suffix) shadows still to send, or None
    cdef object chain                  # proxy.filters.FilterChain of the listener, or None
    cdef bint internal                 # the listener has internal_address_config
    cdef bint attempt_req, attempt_resp   # x-envoy-attempt-count on the request / the response
    cdef int held                      # connection-limit units this connection holds (ConnectionGuard)
    cdef public bint upgrading         # the request in flight asked for an enabled upgrade
    cdef public bint tunnel            # upgraded: raw bytes both ways
    cdef double route_timeout          # the route timeout of the request in flight (x-envoy-upstream-rq-timeout-ms may change it)
    cdef double retry_after            # rate_limited_retry_back_off interval for the next retry; < 0: none
    cdef public double try_end         # this try's per_try_timeout end (0: none)
    cdef public double try_idle        # per_try_idle_timeout of this try (0: none)
    cdef public double try_io          # this try's last upstream activity (loop time)

    cdef _drop_exchange(self)
    cdef _read_head(self, bytes buf)
    cdef _begin(self, RequestHead head)
    cdef _route(self)
    cdef bint _dispatch(self, HostBase host)
    cdef _release_pending(self)
    cdef _send_upstream(self, Upstream up)
    cdef _request_body(self, bytes data)
    cdef _to_upstream(self, bytes data)
    cdef _request_complete(self)
    cdef _mirror(self)
    cdef _arm_route_timeout(self)
    cdef on_response_head(self, ResponseHead rh, Upstream up, bytes body)
    cdef on_response_body(self, bytes data)
    cdef on_response_end(self, bytes trailers, Upstream up)
    cdef on_upstream_reset(self, Upstream up, str reason)
    cdef on_upstream_error(self, int status, str reason, str flag)
    cdef _finish(self)
    cdef _record(self, int status, bint local_failure)
    cdef _release_host(self)
    cdef _set_flag(self, str flag)
    cdef _reset_log_state(self)
    cdef bint _use_host(self, HostBase host, ClusterBase cluster)
    cdef int _retry_wanted(self, int kind, int status, ResponseHead rh)
    cdef bint _schedule_retry(self)
    cdef _arm_try_deadline(self)
    cdef _next_try_deadline(self)
    cdef _set_deadline(self, double seconds, int kind)
    cdef bytes _protocol(self)
    cdef bytes _default_line(self)
    cdef object _generated_request_id(self)
    cdef _pause(self, int bit)
    cdef _resume(self, int bit)


cdef class Upstream:
    cdef public object host         # cluster.Host
    cdef public object worker
    cdef public object transport
    cdef public Downstream ds       # the downstream this connection serves, None when idle
    cdef bytes buf
    cdef int state
    cdef long long left
    cdef ChunkedDecoder dec
    cdef public bint keep_alive
    cdef public bint closed
    cdef public bint reusable
    cdef public double idle_since
    cdef public bint got_bytes
    cdef bint read_paused
    cdef bint no_body
    cdef public long long uses
    cdef public bint multiplexed    # a stream slot on a shared HTTP/2 connection (proxy/http2/upstream.py)
    cdef ClusterStats cst
    cdef HostTable table

    cdef send(self, Downstream ds, bytes head, bint no_body)
    cdef _received(self, bytes data, Downstream ds)
    cdef _body(self, bytes data, Downstream ds)
    cdef _done(self, bytes trailers)
    cdef pause_upstream_reading(self)
    cdef resume_upstream_reading(self)
