"""Multi-Flow: multi-view normalizing flows for industrial anomaly detection."""

__version__ = "0.1.0"
