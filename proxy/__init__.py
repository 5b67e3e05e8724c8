"""gwproxy: a self-hosted API gateway."""
__version__ = "0.1.0"
