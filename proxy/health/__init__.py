"""Active health checking, DNS refresh and the outlier tick: the health-check process.

`checker` holds Envoy's per-host health-check state machine, its timing and the HTTP / TCP / gRPC
probes; `process` is the entry point the master forks (`run(bootstrap, table)`), the single
writer of the host table's health flags (docs/host-table.md).
"""
