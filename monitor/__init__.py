"""csp-monitor: service-health monitoring for cloud resellers."""

__version__ = "0.1.0"
