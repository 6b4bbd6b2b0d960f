"""Client for Convex's HTTP API (POST /api/query, /api/mutation) and the queue's worker functions.

We do not use `convex.http_client.ConvexHttpClient`: it sets no timeout (a dead backend hangs the
caller forever) and calls `requests.post` afresh each time (a new TCP/TLS connection per call).
The agent needs bounded calls, keep-alive and retries it controls, so it speaks the same wire
format here and borrows only the `convex` package's value encoding.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from convex.values import convex_to_json, json_to_convex

from fondation_agent import __version__
from fondation_agent.queue.rules import ErrorCode

LogLines = Sequence[Mapping[str, str]]  # [{"level": …, "text": …}]: the CLI's lines for the job's live logs
Usage = Mapping[str, int]  # {"inputTokens": …, …, "requests": …}: an attempt's Claude usage (queue/component/usage.ts)

# (path, seconds, outcome) with outcome "ok", "error" (the function refused) or "unavailable".
CallObserver = Callable[[str, float, str], None]


class ConvexApiError(Exception):
    """Anything that went wrong talking to Convex."""


class ConvexUnavailable(ConvexApiError):
    """Convex could not be reached or did not answer in time; the call may be tried again later."""


class FunctionError(ConvexApiError):
    """A Convex function refused the call. `code` comes from the function's ConvexError data."""

    code = "server_error"

    def __init__(self, message: str, data: Any = None):
        super().__init__(message)
        self.message = message
        self.data = data


class Unauthorized(FunctionError):
    code = ErrorCode.UNAUTHORIZED


class InvalidArgument(FunctionError):
    code = ErrorCode.INVALID_ARGUMENT


class NotFound(FunctionError):
    code = ErrorCode.NOT_FOUND


class Conflict(FunctionError):
    code = ErrorCode.CONFLICT


class LeaseLost(ConvexApiError):
    """Our lease on a job expired or was taken over: abandon the job and write nothing more."""


_ERRORS_BY_CODE: dict[str, type[FunctionError]] = {
    cls.code: cls for cls in (Unauthorized, InvalidArgument, NotFound, Conflict)
}


def _function_error(body: dict[str, Any]) -> FunctionError:
    data = json_to_convex(body["errorData"]) if "errorData" in body else None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return _ERRORS_BY_CODE.get(data.get("code"), FunctionError)(data["message"], data)
    return FunctionError(str(body.get("errorMessage", "unknown error")), data)


class ConvexHttp:
    """One keep-alive session to a Convex deployment, with a timeout on every call.

    Retries, with jittered exponential backoff, only what cannot have run twice or is safe to
    repeat: failures to connect, queries whose connection broke, and 5xx answers. A read timeout
    is not retried, since the mutation may have been applied; it surfaces as ConvexUnavailable.

    `admin_key` (the deployment's admin key: reaches internal functions such as operator:*) or
    `auth_token` (a user's JWT, for ctx.auth) is sent as Convex's Authorization header; it is
    never part of an error message.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 15.0,
        retries: int = 2,
        retry_base_delay: float = 0.25,
        observer: CallObserver | None = None,
        admin_key: str | None = None,
        auth_token: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        self.retry_base_delay = retry_base_delay
        self.observer = observer
        self.session = requests.Session()
        self.session.headers["Convex-Client"] = f"fondation-agent-{__version__}"
        if admin_key is not None and auth_token is not None:
            raise ValueError("give admin_key or auth_token, not both")
        if admin_key is not None:
            self.session.headers["Authorization"] = f"Convex {admin_key}"
        elif auth_token is not None:
            self.session.headers["Authorization"] = f"Bearer {auth_token}"

    def close(self) -> None:
        self.session.close()

    def query(self, path: str, args: dict[str, Any] | None = None) -> Any:
        return self._call("query", path, args or {})

    def mutation(self, path: str, args: dict[str, Any] | None = None) -> Any:
        return self._call("mutation", path, args or {})

    def _call(self, kind: str, path: str, args: dict[str, Any]) -> Any:
        started = time.monotonic()
        outcome = "unavailable"
        try:
            result = self._call_with_retries(kind, path, args)
            outcome = "ok"
            return result
        except FunctionError:
            outcome = "error"
            raise
        finally:
            if self.observer is not None:
                self.observer(path, time.monotonic() - started, outcome)

    def _call_with_retries(self, kind: str, path: str, args: dict[str, Any]) -> Any:
        body = {"path": path, "args": convex_to_json(args), "format": "json"}
        endpoint = f"{self.url}/api/{kind}"
        for attempt in range(self.retries + 1):
            try:
                response = self.session.post(endpoint, json=body, timeout=self.timeout)
            except requests.ConnectionError as error:
                # Only a call that never left is safe to repeat: a mutation whose connection broke
                # after sending may have run. (ReadTimeout is not a ConnectionError: never retried.)
                if kind != "query" and not _never_sent(error):
                    raise ConvexUnavailable(
                        f"{path}: the connection to {self.url} broke after the call was sent "
                        f"(not repeated: it may have run): {_short(error)}"
                    ) from error
                failure: Exception = error
            except requests.Timeout as error:
                raise ConvexUnavailable(f"{path}: no answer from {self.url} within {self.timeout[1]} s") from error
            else:
                if response.status_code < 500:
                    return self._decode(path, response)
                failure = ConvexUnavailable(f"{path}: {self.url} answered HTTP {response.status_code}")
            if attempt < self.retries:
                time.sleep(random.uniform(0, self.retry_base_delay * 2**attempt))  # noqa: S311 (jitter)
        raise ConvexUnavailable(f"{path}: cannot reach Convex at {self.url}: {_short(failure)}") from failure

    @staticmethod
    def _decode(path: str, response: requests.Response) -> Any:
        try:
            body = response.json()
        except ValueError as error:
            raise ConvexApiError(f"{path}: HTTP {response.status_code}, not JSON: {response.text[:200]}") from error
        if response.status_code in (401, 403):
            raise Unauthorized(f"{path}: HTTP {response.status_code}: {body.get('message', body)}", body)
        if response.status_code != 200:
            raise FunctionError(f"{path}: HTTP {response.status_code}: {body.get('message', body)}")
        if body.get("status") == "success":
            return json_to_convex(body["value"])
        if body.get("status") == "error":
            raise _function_error(body)
        raise ConvexApiError(f"{path}: unexpected answer {str(body)[:200]}")


def operator_docs(client: ConvexHttp, job_id: str) -> list[dict[str, Any]]:
    """A job's documents, page after page (operator:docs answers a Convex pagination result)."""
    docs: list[dict[str, Any]] = []
    cursor = None
    while True:
        result = client.query("operator:docs", {"jobId": job_id, "paginationOpts": {"numItems": 100, "cursor": cursor}})
        docs += result["page"]
        if result["isDone"]:
            return docs
        cursor = result["continueCursor"]


def _never_sent(error: requests.ConnectionError) -> bool:
    """True when the connection could not be made at all (refused, unreachable, connect timeout)."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectTimeout) or isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    )


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 300 else text[:300] + "…"


@dataclass(frozen=True)
class Claim:
    job: dict[str, Any]
    lease_token: str
    attempt: int

    @property
    def job_id(self) -> str:
        return self.job["_id"]


class WorkerApi:
    """The queue's worker functions (convex/worker.ts), with lease_lost turned into LeaseLost."""

    def __init__(self, http: ConvexHttp, worker_token: str, worker_id: str):
        self.http = http
        self._worker_token = worker_token
        self.worker_id = worker_id

    def claim(self, lease_ms: int) -> Claim | None:
        result = self.http.mutation(
            "worker:claim", {"workerToken": self._worker_token, "workerId": self.worker_id, "leaseMs": lease_ms}
        )
        if result is None:
            return None
        return Claim(job=result["job"], lease_token=result["leaseToken"], attempt=int(result["attempt"]))

    def queue_depth(self) -> dict[str, Any]:
        """Pending jobs, the earliest one's availableAt (ms) and active jobs (the queue's counters)."""
        return self.http.query("worker:queueDepth", {"workerToken": self._worker_token})

    def heartbeat(self, claim: Claim, lease_ms: int, **report: Any) -> bool:
        """Renews the lease; returns whether a cancel was requested."""
        report = {key: value for key, value in report.items() if value is not None}
        result = self._leased("worker:heartbeat", claim, leaseMs=lease_ms, **report)
        return bool(result["cancelRequested"])

    def save_docs(self, claim: Claim, docs: list[dict[str, Any]]) -> None:
        self._leased("worker:saveDocs", claim, docs=docs)

    # The attempt's last calls; `logs`: the CLI's lines no heartbeat carried (its last words); `usage`:
    # the attempt's Claude usage (the queue's usage object), when it has one.
    def complete(self, claim: Claim, summary: dict[str, Any] | None = None, *, logs: LogLines = (),
                 usage: Usage | None = None) -> None:
        self._leased("worker:complete", claim, logs, usage, **({"summary": summary} if summary is not None else {}))

    def fail(self, claim: Claim, error: str, error_kind: str, retryable: bool, *,
             logs: LogLines = (), usage: Usage | None = None) -> dict[str, Any]:
        return self._leased("worker:fail", claim, logs, usage, error=error, errorKind=error_kind, retryable=retryable)

    def release(self, claim: Claim, reason: str, host_failure_kind: str | None = None, *,
                logs: LogLines = (), usage: Usage | None = None) -> dict[str, Any]:
        """Hands the job back uncounted. With host_failure_kind, a release for this host's problem,
        which Convex counts: past MAX_HOST_RELEASES of them the job fails instead (`failed` is true)."""
        kind = {"hostFailureKind": host_failure_kind} if host_failure_kind else {}
        return self._leased("worker:release", claim, logs, usage, reason=reason, **kind)

    def canceled(self, claim: Claim, *, logs: LogLines = (), usage: Usage | None = None) -> None:
        self._leased("worker:canceled", claim, logs, usage)

    def _leased(self, path: str, claim: Claim, logs: LogLines = (), usage: Usage | None = None,
                **args: Any) -> dict[str, Any]:
        if logs:
            args["logs"] = list(logs)
        if usage is not None:
            args["usage"] = dict(usage)
        result = self.http.mutation(
            path, {"workerToken": self._worker_token, "jobId": claim.job_id, "leaseToken": claim.lease_token, **args}
        )
        if result.get("ok") is False and result.get("reason") == "lease_lost":
            raise LeaseLost(f"{path}: lease on job {claim.job_id} lost")
        return result
