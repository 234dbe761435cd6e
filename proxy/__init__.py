"""cyvoy: a reverse proxy and load balancer that reads Envoy's v3 configuration."""
__version__ = "0.1.0"
