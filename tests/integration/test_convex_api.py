"""ConvexHttp and WorkerApi (fondation_agent/queue/convex_api.py) against a real localconvex and small fake servers.

Real backend: typed errors, fencing (LeaseLost), value round trips, keep-alive. Fake servers (threads in this
process): a port where nothing listens, a listener whose accept queue is full (connect timeout), a server that
accepts and never answers (read timeout: never retried), and a scripted HTTP server (5xx retries, keep-alive).
Timing assertions only bound hangs, with wide margins: they never measure speed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from convex import ConvexInt64

from fondation_agent.queue.convex_api import (
    Claim,
    Conflict,
    ConvexApiError,
    ConvexHttp,
    ConvexUnavailable,
    FunctionError,
    InvalidArgument,
    LeaseLost,
    NotFound,
    Unauthorized,
    WorkerApi,
    operator_docs,
)
from localconvex.launcher import LocalConvex, identity_token
from tests.helpers import free_port
from tests.integration.conftest import TOKEN
from tests.operator_queue import Queue

pytestmark = pytest.mark.timeout(120)

REPOSITORY = "https://github.com/example/repository"
# Bounds that only catch hangs (the calls below are configured for about 1 s).
NO_HANG = 20.0


def enqueue(client: ConvexHttp, **extra: Any) -> str:
    return client.mutation("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p", **extra})


def missing_job_id(existing: str) -> str:
    """A well-formed job id that no document has: localconvex (convex-test) ids are <counter><table>."""
    digits = len(existing) - len("jobs")
    assert existing.endswith("jobs") and existing[:digits].isdigit(), existing
    return str(10**digits - 1) + "jobs"


def doc(slug: str, content: str, index: int = 0) -> dict[str, Any]:
    return {"title": slug.title(), "slug": slug, "kind": "chapter", "chapterIndex": index, "content": content}


def expect_timely(start: float) -> float:
    elapsed = time.monotonic() - start
    assert elapsed < NO_HANG, f"the call took {elapsed:.1f} s"
    return elapsed


@pytest.fixture
def api(convex: ConvexHttp) -> WorkerApi:
    return WorkerApi(convex, TOKEN, "worker-a")


# ------------------------------------------------------------------------------------------ fake servers


class SilentServer:
    """Accepts TCP connections (the kernel buffers the request) and never answers. Counts connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in [*self.connections, self.listener]:
            connection.close()


class ScriptedServer(ThreadingHTTPServer):
    """HTTP/1.1 keep-alive server answering POSTs from a script of (status, body); the last entry repeats."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, script: list[tuple[int, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def get_request(self):  # counts accepted connections
        accepted = super().get_request()
        with self.lock:
            self.connections += 1
        return accepted

    def next_answer(self, request: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(request)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, answer = self.server.next_answer({"url": self.path, **body})
        text = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *_: Any) -> None:
        pass


@contextlib.contextmanager
def scripted(*script: tuple[int, Any]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(list(script))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def success(value: Any) -> dict[str, Any]:
    return {"status": "success", "value": value, "logLines": []}


# ------------------------------------------------------------------------------------------ typed errors


def test_a_wrong_worker_token_is_unauthorized(convex: ConvexHttp) -> None:
    with pytest.raises(Unauthorized) as caught:
        WorkerApi(convex, "not-the-token", "w").claim(5_000)
    assert caught.value.code == "unauthorized"
    assert caught.value.message == "worker token refused (FONDATION_WORKER_TOKEN is unset or differs)"
    assert caught.value.data == {"code": "unauthorized", "message": caught.value.message}


LEASED_CALLS = {
    "heartbeat": lambda api, claim: api.heartbeat(claim, 5_000),
    "save_docs": lambda api, claim: api.save_docs(claim, [doc("a", "x")]),
    "complete": lambda api, claim: api.complete(claim, {"documents": 1}),
    "fail": lambda api, claim: api.fail(claim, "boom", "cli_failed", retryable=True),
    "release": lambda api, claim: api.release(claim, "shutdown"),
    "canceled": lambda api, claim: api.canceled(claim),
}


@pytest.mark.parametrize("call", LEASED_CALLS, ids=str)
def test_every_worker_function_checks_the_token_first(convex: ConvexHttp, api: WorkerApi, call: str) -> None:
    enqueue(convex)
    claim = api.claim(30_000)
    assert claim is not None
    with pytest.raises(Unauthorized):
        LEASED_CALLS[call](WorkerApi(convex, TOKEN + "x", "w"), claim)
    job = convex.query("operator:get", {"jobId": claim.job_id})
    assert job["status"] == "running" and job["leaseOwner"] == "worker-a", "the refused call changed nothing"


def test_a_backend_without_a_worker_token_refuses_every_worker() -> None:
    with LocalConvex(token=None) as backend:
        client = ConvexHttp(backend.url, read_timeout=10, retries=0, admin_key=backend.admin_key)
        try:
            for token in (TOKEN, "", "anything"):
                with pytest.raises(Unauthorized, match="FONDATION_WORKER_TOKEN is unset or differs"):
                    WorkerApi(client, token, "w").claim(5_000)
            # The operator's functions need no worker token.
            assert client.query("operator:list", {}) == []
        finally:
            client.close()


@pytest.mark.parametrize(
    ("path", "args", "message"),
    [
        ("worker:claim", {"workerId": "w", "leaseMs": 10}, "leaseMs must be a whole number from 1000 to 3600000, not 10"),  # noqa: E501
        ("worker:claim", {"workerId": "w", "leaseMs": 1500.5}, "leaseMs must be a whole number from 1000 to 3600000"),
        ("worker:claim", {"workerId": "", "leaseMs": 5000}, "workerId must not be empty"),
        ("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p", "dedupKey": "k" * 201},
         "dedupKey is too long"),
        ("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p", "maxAttempts": 0},
         "maxAttempts must be a whole"),
        ("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "x" * 20_001},
         "prompt is too long (20001 characters"),
        ("operator:cancel", {"jobId": "not-an-id"}, '"not-an-id" is not a job id'),
        ("operator:list", {"limit": 0}, "paginationOpts.numItems must be a whole number from 1 to 200, not 0"),
    ],
)
def test_invalid_arguments_raise_invalid_argument_with_the_functions_message(
    convex: ConvexHttp, path: str, args: dict[str, Any], message: str
) -> None:
    if path.startswith("worker:"):
        args = {"workerToken": TOKEN, **args}
    call = convex.query if path == "operator:list" else convex.mutation
    with pytest.raises(InvalidArgument) as caught:
        call(path, args)
    assert caught.value.code == "invalid_argument"
    assert caught.value.message.startswith(message), caught.value.message
    assert str(caught.value) == caught.value.message, "the function's own words, no transport noise"
    assert caught.value.data["code"] == "invalid_argument"


def test_unknown_jobs_raise_not_found(convex: ConvexHttp, api: WorkerApi) -> None:
    missing = missing_job_id(enqueue(convex))
    with pytest.raises(NotFound, match=f"^job {missing} does not exist$"):
        convex.mutation("operator:cancel", {"jobId": missing})
    with pytest.raises(NotFound):
        convex.mutation("operator:retry", {"jobId": missing})
    with pytest.raises(NotFound):
        api.heartbeat(Claim(job={"_id": missing}, lease_token="1-x", attempt=1), 5_000)
    assert convex.query("operator:get", {"jobId": missing}) is None, "operator:get answers null rather than refusing"


def test_conflicts_raise_conflict(convex: ConvexHttp, api: WorkerApi) -> None:
    job_id = enqueue(convex)
    claim = api.claim(30_000)
    assert claim is not None and claim.job_id == job_id
    with pytest.raises(Conflict, match="has no cancel request to acknowledge"):
        api.canceled(claim)
    with pytest.raises(Conflict, match="only failed or canceled jobs can be retried"):
        convex.mutation("operator:retry", {"jobId": job_id})
    api.complete(claim)
    with pytest.raises(Conflict, match=f"^job {job_id} is already completed$"):
        convex.mutation("operator:cancel", {"jobId": job_id})


@contextlib.contextmanager
def as_user(backend: LocalConvex, subject: str | None) -> Iterator[ConvexHttp]:
    """A client signed in as `subject` (a test JWT localconvex does not verify), or anonymous."""
    token = None if subject is None else identity_token(subject)
    client = ConvexHttp(backend.url, read_timeout=10, retries=0, auth_token=token)
    try:
        yield client
    finally:
        client.close()


def test_over_http_users_need_an_identity_and_see_only_their_jobs(backend: LocalConvex, convex: ConvexHttp) -> None:
    with as_user(backend, None) as anonymous, as_user(backend, "alice") as alice, as_user(backend, "bob") as bob:
        with pytest.raises(Unauthorized, match="sign in first"):
            anonymous.mutation("jobs:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p"})
        with pytest.raises(Unauthorized, match="sign in first"):
            anonymous.query("jobs:list", {"paginationOpts": {"numItems": 10, "cursor": None}})
        job_id = alice.mutation("jobs:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p"})
        first_page = {"paginationOpts": {"numItems": 10, "cursor": None}}
        assert [job["_id"] for job in alice.query("jobs:list", first_page)["page"]] == [job_id]
        assert bob.query("jobs:list", first_page)["page"] == [] and bob.query("jobs:get", {"jobId": job_id}) is None
        with pytest.raises(NotFound):
            bob.mutation("jobs:cancel", {"jobId": job_id})
        # Internal functions exist only for the admin key.
        with pytest.raises(FunctionError, match="Could not find public function for 'operator:list'"):
            alice.query("operator:list", {})
    assert convex.query("operator:get", {"jobId": job_id})["userId"].endswith("|alice")


def test_a_wrong_admin_key_is_refused(backend: LocalConvex) -> None:
    client = ConvexHttp(backend.url, read_timeout=10, retries=0, admin_key=backend.admin_key[::-1])
    try:
        with pytest.raises(Unauthorized, match="admin key was invalid"):
            client.query("operator:list", {})
    finally:
        client.close()


def test_refusals_without_error_data_are_plain_function_errors(convex: ConvexHttp) -> None:
    with pytest.raises(FunctionError) as missing:
        convex.query("jobs:nope", {})
    assert type(missing.value) is FunctionError and missing.value.code == "server_error"
    assert "Could not find public function for 'jobs:nope'" in missing.value.message
    with pytest.raises(FunctionError) as wrong_kind:
        convex.query("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p"})
    assert "Trying to execute operator:enqueue as Query, but it is defined as Mutation" in str(wrong_kind.value)
    with pytest.raises(FunctionError) as validator:
        convex.mutation("worker:claim", {"workerToken": TOKEN, "workerId": "w", "leaseMs": "soon"})
    assert type(validator.value) is FunctionError and "soon" in str(validator.value), "the validator's words"


def test_malformed_answers_are_api_errors_not_crashes() -> None:
    with scripted((200, "<html>not convex</html>")) as server:
        client = ConvexHttp(server.url, retries=0)
        with pytest.raises(ConvexApiError, match="not JSON"):
            client.query("operator:list")
        client.close()
    with scripted((404, {"code": "NotFound", "message": "no route for POST /api/query"})) as server:
        client = ConvexHttp(server.url, retries=0)
        with pytest.raises(FunctionError, match="HTTP 404: no route"):
            client.query("operator:list")
        client.close()


# ------------------------------------------------------------------------------------------ fencing


def stale_and_current(convex: ConvexHttp) -> tuple[WorkerApi, Claim, WorkerApi, Claim]:
    """Worker A claims with a 1 s lease and goes silent; once it expired, worker B claims the job."""
    job_id = enqueue(convex)
    a, b = WorkerApi(convex, TOKEN, "worker-a"), WorkerApi(convex, TOKEN, "worker-b")
    stale = a.claim(1_000)
    assert stale is not None and stale.job_id == job_id and stale.attempt == 1
    a.save_docs(stale, [doc("from-a", "written by the stale attempt")])
    time.sleep(1.5)
    current = b.claim(30_000)
    assert current is not None and current.job_id == job_id, "the stalled job is claimed again"
    assert current.attempt == 2, "a lease that ran out counts as an attempt"
    assert current.lease_token != stale.lease_token
    return a, stale, b, current


def test_a_stale_lease_token_is_refused_for_every_leased_call(convex: ConvexHttp) -> None:
    a, stale, b, current = stale_and_current(convex)
    for name, call in LEASED_CALLS.items():
        with pytest.raises(LeaseLost, match=f"lease on job {stale.job_id} lost"):
            call(a, stale)
        job = convex.query("operator:get", {"jobId": stale.job_id})
        assert (job["status"], job["leaseOwner"], job["attempts"]) == ("running", "worker-b", 2), name
    assert b.heartbeat(current, 30_000) is False, "the current holder keeps its lease"
    b.save_docs(current, [doc("from-b", "written by the current attempt")])
    b.complete(current, {"by": "worker-b"})
    job = convex.query("operator:get", {"jobId": stale.job_id})
    assert job["status"] == "completed" and job["result"] == {"by": "worker-b"}
    assert job["leaseExpiries"] == 1
    docs = operator_docs(convex, stale.job_id)
    assert [d["slug"] for d in docs] == ["from-b"], "nothing of the stale attempt is the job's"


def test_an_expired_lease_is_lost_and_its_reaper_queues_the_job_again(convex: ConvexHttp, api: WorkerApi) -> None:
    job_id = enqueue(convex)
    claim = api.claim(1_000)
    assert claim is not None
    time.sleep(1.5)
    with pytest.raises(LeaseLost):
        api.complete(claim)
    with pytest.raises(LeaseLost):
        api.heartbeat(claim, 30_000)
    # worker:reapLease, scheduled by the claim at the lease's end, runs on localconvex's scheduler.
    job = Queue(convex).wait_for(job_id, lambda job: job["status"] == "pending")
    assert (job["attempts"], job["leaseExpiries"]) == (1, 1)
    again = api.claim(30_000)
    assert again is not None and again.job["_id"] == job_id and again.attempt == 2


def test_heartbeats_report_cancel_requests(convex: ConvexHttp, api: WorkerApi) -> None:
    job_id = enqueue(convex)
    claim = api.claim(30_000)
    assert claim is not None
    assert api.heartbeat(claim, 30_000, status="analyzing", progress="Step 2/6", currentStep=2, totalSteps=6) is False
    job = convex.query("operator:get", {"jobId": job_id})
    assert (job["status"], job["progress"], job["currentStep"], job["totalSteps"]) == ("analyzing", "Step 2/6", 2, 6)
    assert convex.mutation("operator:cancel", {"jobId": job_id}) == {"status": "cancel_requested"}
    assert api.heartbeat(claim, 30_000) is True
    api.canceled(claim)
    assert convex.query("operator:get", {"jobId": job_id})["status"] == "canceled"


# ------------------------------------------------------------------------------------------ unavailable


def test_nothing_listening_is_unavailable_quickly() -> None:
    observed: list[tuple[str, float, str]] = []
    url = f"http://127.0.0.1:{free_port()}"
    client = ConvexHttp(url, connect_timeout=1, read_timeout=1, retries=2, retry_base_delay=0.05,
                        observer=lambda *event: observed.append(event))
    start = time.monotonic()
    with pytest.raises(ConvexUnavailable, match=re.escape(f"worker:claim: cannot reach Convex at {url}: ")):
        WorkerApi(client, TOKEN, "w").claim(5_000)
    expect_timely(start)
    assert [(path, outcome) for path, _, outcome in observed] == [("worker:claim", "unavailable")]


def test_a_stopped_backend_is_unavailable_and_the_dead_connection_is_not_a_hang() -> None:
    backend = LocalConvex(token=TOKEN).start()
    client = ConvexHttp(backend.url, connect_timeout=1, read_timeout=2, retries=2, retry_base_delay=0.05,
                        admin_key=backend.admin_key)
    try:
        assert client.query("operator:list", {}) == []  # a pooled keep-alive connection now exists
        backend.stop()
        start = time.monotonic()
        with pytest.raises(ConvexUnavailable, match="cannot reach Convex"):
            client.query("operator:list", {})
        expect_timely(start)
        backend.start()  # same port
        assert client.query("operator:list", {}) == [], "the same client recovers once the backend is back"
    finally:
        client.close()
        backend.stop()


def test_a_connect_timeout_is_bounded_and_retried() -> None:
    # A listener whose accept queue is full drops new SYNs: connecting hangs until the connect timeout.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        client = ConvexHttp(f"http://127.0.0.1:{port}", connect_timeout=0.5, read_timeout=1, retries=2,
                            retry_base_delay=0.01)
        start = time.monotonic()
        with pytest.raises(ConvexUnavailable, match="timed out"):
            client.mutation("worker:claim", {})
        elapsed = expect_timely(start)
        assert elapsed >= 3 * 0.5 * 0.9, "a connect timeout is retried (the request never left)"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_a_server_that_never_answers_times_out_without_a_retry() -> None:
    server = SilentServer()
    observed: list[tuple[str, float, str]] = []
    client = ConvexHttp(server.url, connect_timeout=1, read_timeout=1, retries=3, retry_base_delay=0.01,
                        observer=lambda *event: observed.append(event))
    try:
        start = time.monotonic()
        expected = re.escape(f"worker:complete: no answer from {server.url} within 1 s")
        with pytest.raises(ConvexUnavailable, match=expected):
            client.mutation("worker:complete", {"workerToken": TOKEN, "jobId": "j", "leaseToken": "t"})
        elapsed = expect_timely(start)
        assert elapsed >= 0.9, "the read timeout was honoured"
        time.sleep(0.3)
        assert len(server.connections) == 1, "a mutation that may have run is never sent twice"
        assert [(path, outcome) for path, _, outcome in observed] == [("worker:complete", "unavailable")]
    finally:
        client.close()
        server.close()


def test_a_connection_dropped_after_the_request_was_sent_is_not_retried() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    received: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                received.append(connection.recv(65536))  # the mutation arrived and may have run...
                connection.close()  # ...then the connection drops before the answer

    threading.Thread(target=serve, daemon=True).start()
    client = ConvexHttp(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=2, retry_base_delay=0.01)
    try:
        with pytest.raises(ConvexUnavailable):
            client.mutation("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p"})
        assert len(received) == 1, f"the mutation reached the server {len(received)} times"
    finally:
        client.close()
        listener.close()


# ------------------------------------------------------------------------------------------ retries, keep-alive


def test_5xx_answers_are_retried_until_success() -> None:
    observed: list[tuple[str, float, str]] = []
    with scripted((503, {"code": "Unavailable"}), (503, "oops"), (200, success({"n": 1.0}))) as server:
        client = ConvexHttp(server.url, retries=2, retry_base_delay=0.01, observer=lambda *e: observed.append(e))
        assert client.mutation("operator:enqueue", {"repositoryUrl": REPOSITORY, "prompt": "p"}) == {"n": 1.0}
        client.close()
    assert len(server.requests) == 3
    assert all((r["url"], r["path"]) == ("/api/mutation", "operator:enqueue") for r in server.requests)
    assert [r["args"] for r in server.requests] == [{"repositoryUrl": REPOSITORY, "prompt": "p"}] * 3
    assert [(path, outcome) for path, _, outcome in observed] == [("operator:enqueue", "ok")], \
        "one observation per call"


def test_5xx_answers_give_up_after_the_configured_retries() -> None:
    with scripted((502, "bad gateway")) as server:
        client = ConvexHttp(server.url, retries=2, retry_base_delay=0.01)
        with pytest.raises(ConvexUnavailable, match="answered HTTP 502"):
            client.query("operator:list")
        client.close()
    assert len(server.requests) == 3


def test_calls_reuse_one_keep_alive_connection() -> None:
    with scripted((200, success(None))) as server:
        client = ConvexHttp(server.url, retries=0)
        for i in range(25):
            client.query("operator:get", {"jobId": str(i)})
        client.close()
    assert len(server.requests) == 25
    assert server.connections == 1


def test_calls_to_localconvex_reuse_one_connection(convex: ConvexHttp) -> None:
    for _ in range(30):
        convex.query("operator:list", {"limit": 1})
    pools = convex.session.get_adapter(convex.url).poolmanager.pools
    counts = [(pools[key].num_requests, pools[key].num_connections) for key in pools.keys()]  # noqa: SIM118
    assert counts == [(30, 1)], "one pool, one connection, every request on it"


# ------------------------------------------------------------------------------------------ values, observer


def test_values_round_trip_as_convex_values(convex: ConvexHttp, api: WorkerApi) -> None:
    job_id = enqueue(convex, maxAttempts=2)
    claim = api.claim(30_000)
    assert claim is not None
    assert claim.attempt == 1 and isinstance(claim.attempt, int), "WorkerApi makes the attempt an int"
    assert claim.job["maxAttempts"] == 2.0 and isinstance(claim.job["maxAttempts"], float), "Convex numbers are floats"
    summary = {
        "documents": 3,
        "ratio": 0.25,
        "negative": -7,
        "nested": {"list": [1, "two", {"three": None, "yes": True, "no": False}], "empty": {}},
        "big": ConvexInt64(2**60),
        "bytes": b"\x00\xff",
        "text": "é — 🎉",
    }
    api.complete(claim, summary)
    result = convex.query("operator:get", {"jobId": job_id})["result"]
    assert result == summary
    assert isinstance(result["documents"], float) and isinstance(result["nested"]["list"][0], float)
    assert result["big"] == ConvexInt64(2**60) and result["bytes"] == b"\x00\xff"


def test_the_observer_sees_every_call_with_its_outcome(backend: LocalConvex) -> None:
    observed: list[tuple[str, float, str]] = []
    client = ConvexHttp(backend.url, retries=0, observer=lambda *event: observed.append(event),
                        admin_key=backend.admin_key)
    api = WorkerApi(client, TOKEN, "w")
    try:
        enqueue(client)
        claim = api.claim(1_000)
        assert claim is not None
        with pytest.raises(InvalidArgument):
            api.heartbeat(claim, 1)
        time.sleep(1.5)
        with pytest.raises(LeaseLost):
            api.complete(claim)
        with pytest.raises(FunctionError):
            client.query("jobs:nope")
    finally:
        client.close()
    assert [(path, outcome) for path, _, outcome in observed] == [
        ("operator:enqueue", "ok"),
        ("worker:claim", "ok"),
        ("worker:heartbeat", "error"),
        ("worker:complete", "ok"),  # the call worked; it said lease_lost
        ("jobs:nope", "error"),
    ]
    assert all(isinstance(seconds, float) and 0 <= seconds < NO_HANG for _, seconds, _ in observed)
