"""Envoy's admin interface in its own process (server.py) and the shared control block between
the master, the admin process and the workers (control.py). See proxy/admin/README.md."""
