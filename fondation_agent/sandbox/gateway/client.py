"""The agent's side of the gateway: register an attempt, read its usage and verdict, delete it.

Two gateways answer the same calls: `ControlClient`, the gateway service over its control socket
(`sandbox = "systemd-service"`), and `InProcessGateway`, the same aiohttp code in a thread of the
agent, its jobs listener on a 127.0.0.1 port (`sandbox = "process"`).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from fondation_agent.sandbox.gateway import CONTROL_SOCKET, JOB_GATEWAY_PORT
from fondation_agent.sandbox.gateway.attempts import Usage, Verdict
from fondation_agent.sandbox.gateway.server import Gateway, start_unix_site
from fondation_agent.sandbox.gateway.settings import DEFAULT_MAX_REQUEST_BYTES
from fondation_agent.sandbox.relay import UnixHTTPConnection

CONTROL_TIMEOUT_S = 10.0
CONTROL_SOCKET_MODE = 0o600  # an in-process gateway's control socket (tests): the agent's own user


class GatewayUnavailable(Exception):
    """The gateway did not answer or refused a control call (the host's problem, not the job's)."""


@dataclass(frozen=True)
class Registration:
    id: str
    token: str


@dataclass(frozen=True)
class Report:
    usage: Usage
    verdict: Verdict | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        verdict = data.get("verdict")
        return cls(Usage.from_json(data.get("usage") or {}), Verdict(verdict) if verdict else None)


class GatewayAccess(Protocol):
    url: str  # where a job reaches the gateway (ANTHROPIC_BASE_URL)

    def register(self, job_id: str, attempt: int, max_tokens: int, ttl_s: float) -> Registration: ...

    def read(self, attempt_id: str) -> Report | None: ...

    def delete(self, attempt_id: str) -> Report | None: ...

    def close(self) -> None: ...


class ControlClient:
    """The gateway service's control API over its UNIX socket."""

    def __init__(self, socket_path: str = CONTROL_SOCKET, url: str = f"http://127.0.0.1:{JOB_GATEWAY_PORT}"):
        self.socket_path = socket_path
        self.url = url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The answer's JSON; None for 404; GatewayUnavailable for anything else that is not 200."""
        connection = UnixHTTPConnection(self.socket_path, CONTROL_TIMEOUT_S)
        try:
            data = json.dumps(body).encode() if body is not None else None
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise GatewayUnavailable(f"the Claude gateway ({self.socket_path}) is unreachable: {error}") from None
        finally:
            connection.close()
        if response.status == 404:
            return None
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if response.status != 200 or not isinstance(answer, dict):
            raise GatewayUnavailable(f"the Claude gateway answered {method} {path} with {response.status}")
        return answer

    def register(self, job_id: str, attempt: int, max_tokens: int, ttl_s: float) -> Registration:
        answer = self._call("POST", "/attempts", {"jobId": job_id, "attempt": attempt, "maxTokens": max_tokens,
                                                  "ttlSeconds": ttl_s})
        if answer is None or not isinstance(answer.get("token"), str) or not isinstance(answer.get("id"), str):
            raise GatewayUnavailable("the Claude gateway gave no token")
        return Registration(answer["id"], answer["token"])

    def read(self, attempt_id: str) -> Report | None:
        answer = self._call("GET", f"/attempts/{attempt_id}")
        return None if answer is None else Report.from_json(answer)

    def delete(self, attempt_id: str) -> Report | None:
        answer = self._call("DELETE", f"/attempts/{attempt_id}")
        return None if answer is None else Report.from_json(answer)

    def close(self) -> None:
        pass


class InProcessGateway:
    """The gateway in a thread of the agent: jobs on 127.0.0.1 (an ephemeral port), attempts called
    directly; `control_socket` also serves the control API there (tests of ControlClient)."""

    def __init__(self, *, credential: Mapping[str, str], upstream: str,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, control_socket: str | None = None):
        self.gateway = Gateway(credential=credential, upstream=upstream, max_request_bytes=max_request_bytes)
        self._control_socket = control_socket
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="claude-gateway")
        self.url = ""

    def start(self) -> InProcessGateway:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _start(self) -> int:
        jobs = web.AppRunner(self.gateway.jobs_app())
        await jobs.setup()
        self._runners.append(jobs)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(jobs, listener).start()
        if self._control_socket:
            control = web.AppRunner(self.gateway.control_app())
            await control.setup()
            self._runners.append(control)
            await start_unix_site(control, self._control_socket, CONTROL_SOCKET_MODE)
        return listener.getsockname()[1]

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def cleanup() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def register(self, job_id: str, attempt: int, max_tokens: int, ttl_s: float) -> Registration:
        token, attempt_id = self.gateway.attempts.register(job_id, attempt, max_tokens, ttl_s)
        return Registration(attempt_id, token)

    def read(self, attempt_id: str) -> Report | None:
        report = self.gateway.attempts.snapshot(attempt_id)
        return None if report is None else Report.from_json(report)

    def delete(self, attempt_id: str) -> Report | None:
        entry = self.gateway.attempts.delete(attempt_id)
        return None if entry is None else Report.from_json(entry.report())
