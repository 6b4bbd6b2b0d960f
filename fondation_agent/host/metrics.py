"""Prometheus metrics and the /health endpoint (docs/metrics.md lists every metric)."""

from __future__ import annotations

import contextlib
import functools
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fondation_agent import __version__

PREFIX = "fondation_agent"
CLAUDE_TOKEN_KINDS = ("input", "output", "cache_read", "cache_creation")
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
# Scrapes and health checks are short and few: more at once, or a silent client, is not one of them.
MAX_CONNECTIONS = 32
IDLE_TIMEOUT_S = 10.0
# A metrics_address someone else holds is tried again after these many seconds, doubling up to the cap.
BIND_RETRY = (1.0, 60.0)
# While it still cannot listen, the log says so again at most this often (not once a try).
BIND_REMINDER_S = 600.0


class Metrics:
    """One registry per agent, so several agents (and tests) never share counters."""

    def __init__(self, worker_id: str):
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(f"{PREFIX}_build_info", "Always 1; labels carry the version.",
                                ["version", "worker_id"], registry=r)
        self.build_info.labels(__version__, worker_id).set(1)
        self.jobs_claimed = Counter(f"{PREFIX}_jobs_claimed", "Jobs claimed from the queue.", registry=r)
        self.jobs_finished = Counter(f"{PREFIX}_jobs_finished", "Job attempts ended, by outcome.",
                                     ["outcome"], registry=r)
        self.job_duration = Histogram(f"{PREFIX}_job_duration_seconds", "Claim to end of a job attempt.",
                                      ["outcome"], buckets=JOB_BUCKETS, registry=r)
        self.stage_duration = Histogram(f"{PREFIX}_stage_duration_seconds", "Time spent in each stage of a job.",
                                        ["stage"], buckets=JOB_BUCKETS, registry=r)
        self.queue_wait = Histogram(f"{PREFIX}_queue_wait_seconds", "Job creation to first claim.",
                                    buckets=WAIT_BUCKETS, registry=r)
        self.slots_busy = Gauge(f"{PREFIX}_slots_busy", "Job slots in use.", registry=r)
        self.slots_total = Gauge(f"{PREFIX}_slots_total", "Job slots configured (concurrency).", registry=r)
        self.convex_calls = Counter(f"{PREFIX}_convex_calls", "Calls to Convex functions, by outcome.",
                                    ["function", "outcome"], registry=r)
        self.convex_latency = Histogram(f"{PREFIX}_convex_call_duration_seconds", "Latency of Convex calls.",
                                        ["function"], buckets=FAST_BUCKETS, registry=r)
        self.lease_renewals = Counter(f"{PREFIX}_lease_renewals", "Successful heartbeats.", registry=r)
        self.lease_losses = Counter(f"{PREFIX}_lease_losses", "Jobs abandoned because their lease was lost.",
                                    registry=r)
        self.last_poll = Gauge(f"{PREFIX}_last_successful_poll_timestamp_seconds",
                               "Unix time of the last claim call that Convex answered.", registry=r)
        self.draining = Gauge(f"{PREFIX}_draining", "1 while the agent drains before stopping.", registry=r)
        self.cli_lines = Counter(f"{PREFIX}_cli_output_lines", "Lines the CLI printed on stdout.", registry=r)
        self.service_restarts = Gauge(f"{PREFIX}_service_restarts",
                                      "systemd's automatic restarts of this agent's unit (NRestarts) at start-up.",
                                      registry=r)
        # The queue as a whole (worker:queueDepth), the same on every agent: delivered by the wake
        # subscription, or read every QUEUE_DEPTH_INTERVAL while there is none.
        self.queue_pending = Gauge(f"{PREFIX}_queue_pending", "Pending jobs: due, or backing off before a retry.",
                                   registry=r)
        self.queue_oldest_pending_age = Gauge(f"{PREFIX}_queue_oldest_pending_age_seconds",
                                              "How long the longest-waiting due job has waited.", registry=r)
        # Unix time (s) from which the longest-waiting job is due, None: none waits. The age is
        # computed at each scrape, so it grows between two deliveries of the depth.
        self._oldest_pending_since: float | None = None
        self.queue_oldest_pending_age.set_function(
            lambda: 0.0 if self._oldest_pending_since is None else max(0.0, time.time() - self._oldest_pending_since))
        self.queue_active = Gauge(f"{PREFIX}_queue_active", "Jobs being worked on, by all agents.", registry=r)
        self.host_paused = Gauge(f"{PREFIX}_host_paused",
                                 "1 while claiming is paused after repeated host-side failures.", registry=r)
        self.wake_subscription = Gauge(f"{PREFIX}_wake_subscription",
                                       "1 for the wake subscription's state (connecting, up, down); all 0 with "
                                       "wake = poll.", ["state"], registry=r)
        self.wake_updates = Counter(f"{PREFIX}_wake_updates", "Values the wake subscription delivered.", registry=r)
        self.host_failures = Counter(f"{PREFIX}_host_failures", "Attempts released for a host-side failure, by kind.",
                                     ["kind"], registry=r)
        self.claude_tokens = Counter(f"{PREFIX}_claude_tokens", "Claude tokens the jobs used (the gateway's count), "
                                     "by kind: input, output, cache_read, cache_creation.", ["kind"], registry=r)
        for kind in CLAUDE_TOKEN_KINDS:
            self.claude_tokens.labels(kind)
        self.claude_requests = Counter(f"{PREFIX}_claude_requests", "Requests the jobs sent to Claude through the "
                                       "gateway.", registry=r)

    def observe_claude_usage(self, tokens: dict[str, int], requests: int) -> None:
        """An ended attempt's Claude usage, as the gateway counted it: tokens by CLAUDE_TOKEN_KINDS."""
        for kind in CLAUDE_TOKEN_KINDS:
            self.claude_tokens.labels(kind).inc(tokens[kind])
        self.claude_requests.inc(requests)

    def set_queue_depth(self, depth: dict) -> None:
        """worker:queueDepth's answer."""
        self.queue_pending.set(depth["pending"])
        self.queue_active.set(depth["active"])
        since = depth["oldestPendingAvailableAt"]
        self._oldest_pending_since = None if since is None else since / 1000

    def observe_convex_call(self, function: str, seconds: float, outcome: str) -> None:
        self.convex_calls.labels(function, outcome).inc()
        self.convex_latency.labels(function).observe(seconds)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry))
        elif path == "/health":
            healthy, body = self.server.health()
            self._send(200 if healthy else 503, "application/json", json.dumps(body).encode())
        else:
            self._send(404, "text/plain", b"not found: try /metrics or /health\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:  # scrapes are not worth a log line each
        pass


class _Server(ThreadingHTTPServer):
    """One thread per connection, but at most `max_connections` of them, each dropped after
    `idle_timeout` seconds of silence: idle connections cannot pile up threads in the agent."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Callable[[], tuple[bool, dict]], *,
                 max_connections: int, idle_timeout: float, listening: socket.socket | None = None):
        self.metrics = metrics
        self.health = health
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler, bind_and_activate=listening is None)
        if listening is not None:  # already bound and listening: systemd kept it across a restart
            self.socket.close()
            self.socket = listening
            self.server_address = listening.getsockname()[:2]

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, peer = super().get_request()
        connection.settimeout(self.idle_timeout)  # every read and write of the handler
        return connection, peer

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed at once, no thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """Serves /metrics and /health on metrics_address from a background thread."""

    def __init__(self, address: str, metrics: Metrics, health: Callable[[], tuple[bool, dict]], *,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT_S,
                 listening: socket.socket | None = None):
        self._server = _Server(split_address(address), metrics, health, max_connections=max_connections,
                               idle_timeout=idle_timeout, listening=listening)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="metrics")

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def fileno(self) -> int:
        return self._server.fileno()

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsEndpoint:
    """The MetricsServer on metrics_address, listening as soon as it can.

    Under systemd its socket outlives the process: `keep(fd)` hands it to systemd's file descriptor
    store, and the next start gets it back (`inherited`), so no job can take the port while the agent
    restarts. A port another process holds is still never fatal (after a stop, not a restart, the
    store is empty): an agent exiting on it would stay down (exit 2 is not restarted). The agent runs
    without /metrics and /health meanwhile; `problem` says why, for systemd's STATUS.
    """

    def __init__(self, address: str, metrics: Metrics, health: Callable[[], tuple[bool, dict]], log: Any, *,
                 retry: tuple[float, float] = BIND_RETRY, inherited: int | None = None,
                 keep: Callable[[int], None] = lambda fd: None, forget: Callable[[], None] = lambda: None):
        self.configured = address
        self._new_server = functools.partial(MetricsServer, address, metrics, health)
        self._inherited, self._keep, self._forget = inherited, keep, forget
        self._log = log
        self._first_delay, self._max_delay = retry
        self._lock = threading.Lock()  # a bind and stop() never cross
        self._stopped = threading.Event()
        self._server: MetricsServer | None = None
        self._error = ""
        self.attempts = 0

    @property
    def address(self) -> str | None:
        """Where it listens; None until it does."""
        server = self._server
        return None if server is None else server.address

    @property
    def problem(self) -> str | None:
        """`no metrics endpoint yet (ADDRESS: why)` while it cannot listen; None otherwise."""
        if self._server is not None or not self._error:
            return None
        return f"no metrics endpoint yet ({self.configured}: {self._error})"

    def start(self) -> MetricsEndpoint:
        """Listens now if it can; otherwise says so once and keeps trying from a thread of its own."""
        if not self._listen():
            self._log.warning("no metrics endpoint yet: cannot listen, trying again in the background",
                              address=self.configured, error=self._error)
            threading.Thread(target=self._keep_trying, name="metrics-bind", daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            if self._server is not None:
                self._server.stop()

    def _listen(self) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            self.attempts += 1
            if self._inherited is not None:
                listening, self._inherited = self._inherited_socket(), None
                if listening is not None:
                    self._server = self._new_server(listening=listening).start()
                    return True
            try:
                self._server = self._new_server().start()
            except OSError as error:
                self._error = error.strerror or str(error)
                return False
            self._keep(self._server.fileno())
            return True

    def _inherited_socket(self) -> socket.socket | None:
        """The socket systemd kept, if it is still the configured address (metrics_address may have changed)."""
        listening = socket.socket(fileno=self._inherited)
        with contextlib.suppress(OSError, ValueError):
            if listening.getsockname()[:2] == split_address(self.configured):
                return listening
        listening.close()
        self._forget()
        return None

    def _keep_trying(self) -> None:
        delay = self._first_delay
        said_at = time.monotonic()
        while not self._stopped.wait(delay * random.uniform(0.8, 1.2)):  # noqa: S311 (jitter, as the polls)
            if self._listen():
                self._log.info("metrics endpoint listening", address=self.address, attempts=self.attempts)
                return
            delay = min(self._max_delay, delay * 2)
            if time.monotonic() - said_at >= BIND_REMINDER_S:
                said_at = time.monotonic()
                self._log.warning("still no metrics endpoint: cannot listen", address=self.configured,
                                  error=self._error, attempts=self.attempts)
