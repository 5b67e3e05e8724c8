"""Gateway config: load a YAML file, validate it, report problems by file, line and field.

    from proxy.config import load_config, ConfigError
    try:
        cfg, loc = load_config("gateway.yaml")
    except ConfigError as e:
        print(e, file=sys.stderr)   # one line per problem
"""
from .loader import ConfigError, Locator, format_path, load_config, load_config_text, load_schema
from .schema import parse_duration, split_host_port

__all__ = [
    "ConfigError", "Locator", "format_path", "load_config", "load_config_text", "load_schema",
    "parse_duration", "split_host_port",
]
