"""cyvoy's configuration: Envoy's v3 bootstrap (YAML or JSON) read into `proxy.config.model`.

    from proxy.config import load_file, ConfigError
    try:
        bootstrap = load_file("envoy.yaml")
    except ConfigError as e:        # str(e) == f"{e.path}: {e.reason}"
        ...
"""
from proxy.config.errors import ConfigError
from proxy.config.loader import load_dict, load_file, load_text

__all__ = ["ConfigError", "load_dict", "load_file", "load_text"]
