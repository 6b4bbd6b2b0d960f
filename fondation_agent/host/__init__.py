"""The host's plumbing: what the agent tells systemd, the journal and Prometheus.

metrics (Prometheus metrics, /metrics and /health), notify (sd_notify), logs (structlog into the
journal), pause (claiming paused after host problems, with backoff).

May import: nothing of fondation_agent but its __version__.
"""
