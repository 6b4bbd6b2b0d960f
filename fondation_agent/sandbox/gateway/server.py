"""The gateway's two HTTP listeners (aiohttp).

Jobs: `POST /v1/messages` and `POST /v1/messages/count_tokens` only, authenticated by the attempt's
token (`x-api-key` or `Authorization: Bearer`), forwarded to the upstream with the real credential in
its place; server-sent events go through chunk by chunk as they arrive. Everything else is refused
with an Anthropic-style error body, logged (never a token, never the credential) and counted.

Over the jobs socket a token is its job user's: job_exec claims it (`POST CLAIM_PATH`) before the
job's code runs, and a request with it from any other uid (SO_PEERCRED) is refused, another job's
included. Over TCP (the in-process gateway of `sandbox = "process"`, where jobs share the agent's
user) there is no user to tell apart.

Control (the agents only): `POST /attempts {jobId, attempt, maxTokens}` → `{token, id}`,
`GET /attempts/{id}` → `{usage, verdict}`, `DELETE /attempts/{id}`, `GET /refusals` → counts by reason.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from fondation_agent.host.logs import get_logger
from fondation_agent.sandbox.gateway import CLAIM_PATH
from fondation_agent.sandbox.gateway.attempts import DEFAULT_TTL_S, Attempt, Attempts, Usage, Verdict
from fondation_agent.sandbox.gateway.credentials import OAUTH_BETA, credential_headers

FORWARDED_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
# Never forwarded from a job: its own authentication, hop-by-hop headers, and what aiohttp sets itself.
_DROPPED_REQUEST_HEADERS = frozenset({
    "x-api-key", "authorization", "proxy-authorization", "cookie", "host", "content-length", "connection",
    "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "accept-encoding",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
})
# Never copied back from the upstream: hop-by-hop, and the framing aiohttp redoes (bodies arrive decoded).
_DROPPED_RESPONSE_HEADERS = frozenset({
    "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "set-cookie",
})
_VERDICTS = {401: Verdict.CLAUDE_AUTH, 403: Verdict.CLAUDE_AUTH, 429: Verdict.RATE_LIMITED, 529: Verdict.RATE_LIMITED}
_USAGE_FIELDS = (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                 ("cache_read_input_tokens", "cache_read_tokens"),
                 ("cache_creation_input_tokens", "cache_creation_tokens"))
_READ_CHUNK = 64 * 1024
_MAX_USAGE_BUFFER = 16 * 1024**2  # a JSON answer (or one SSE line) past this is passed on uncounted


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def peer_uid(request: web.Request) -> int | None:
    """The uid of the process at the other end of a UNIX socket's connection; None over TCP."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


class UsageReader:
    """Reads a response's `usage` as it passes: SSE `message_start` and `message_delta` events (the
    later numbers replace the earlier: Anthropic's are cumulative), or a JSON body's `usage`."""

    def __init__(self, streamed: bool):
        self.streamed = streamed
        self._buffer = bytearray()
        self._seen: dict[str, int] = {}

    def feed(self, chunk: bytes) -> None:
        if len(self._buffer) + len(chunk) > _MAX_USAGE_BUFFER:
            self._buffer.clear()  # not an answer of the Messages API's: nothing to count in it
            return
        self._buffer += chunk
        if not self.streamed:
            return
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:])

    def usage(self) -> Usage:
        if not self.streamed:
            self._event(bytes(self._buffer))
        return Usage(**{name: self._seen.get(name, 0) for _, name in _USAGE_FIELDS}, requests=1)

    def _event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        message = event.get("message") if event.get("type") == "message_start" else event
        usage = message.get("usage") if isinstance(message, dict) else None
        if not isinstance(usage, dict):
            return
        for wire, name in _USAGE_FIELDS:
            value = usage.get(wire)
            if isinstance(value, int) and value >= 0:
                self._seen[name] = value


class Gateway:
    """The listeners' handlers over one registry of attempts and one credential."""

    def __init__(self, *, credential: Mapping[str, str], upstream: str, max_request_bytes: int,
                 attempts: Attempts | None = None):
        self.attempts = attempts or Attempts()
        self.upstream = upstream.rstrip("/")
        self.max_request_bytes = max_request_bytes
        self.refusals: Counter[str] = Counter()
        self.log = get_logger(component="gateway")
        self._auth = credential_headers(credential)
        self._oauth = "authorization" in self._auth
        self._session: aiohttp.ClientSession | None = None

    # ---- applications ---------------------------------------------------------------------------

    def jobs_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request_bytes)
        app.router.add_post(CLAIM_PATH, self.claim)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_startup.append(self._open_session)
        app.on_cleanup.append(self._close_session)
        return app

    def control_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/attempts", self.register)
        app.router.add_get("/attempts/{id}", self.read)
        app.router.add_delete("/attempts/{id}", self.delete)
        app.router.add_get("/refusals", self.read_refusals)
        return app

    async def _open_session(self, _app: web.Application) -> None:
        if self._session is None:
            # No timeout on the whole exchange: a long answer streams for minutes.
            timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=600)
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=True, trust_env=False)

    async def _close_session(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- jobs -----------------------------------------------------------------------------------

    def refuse(self, status: int, kind: str, reason: str, message: str, **context: Any) -> web.Response:
        """A refused job request: logged (never a token), counted by reason, answered the API's way."""
        self.refusals[reason] += 1
        self.log.warning("gateway refused a request", reason=reason, status=status, **context)
        return web.json_response(error_body(kind, message), status=status)

    def _token(self, request: web.Request) -> str:
        token = request.headers.get("x-api-key", "")
        if not token:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else ""
        return token

    async def claim(self, request: web.Request) -> web.Response:
        attempt = self.attempts.by_token(self._token(request))
        if attempt is None:
            return self.refuse(401, "authentication_error", "token",
                               "invalid x-api-key: this job's gateway token is unknown, expired or revoked",
                               path=request.path)
        context = {"job_id": attempt.job_id, "attempt": attempt.attempt}
        uid = peer_uid(request)
        if uid is None:
            return self.refuse(400, "invalid_request_error", "claim", "a token is claimed over the jobs socket only",
                               **context)
        if not self.attempts.claim(attempt, uid):
            return self.refuse(403, "permission_error", "user", "this gateway token is another job's", uid=uid,
                               **context)
        self.log.info("attempt claimed", uid=uid, **context)
        return web.json_response({"claimed": True})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST" or request.path not in FORWARDED_PATHS:
            return self.refuse(404, "not_found_error", "path",
                               f"the Claude gateway forwards only POST {' and POST '.join(sorted(FORWARDED_PATHS))}",
                               method=request.method, path=request.path[:200])
        attempt = self.attempts.by_token(self._token(request))
        if attempt is None:
            return self.refuse(401, "authentication_error", "token",
                               "invalid x-api-key: this job's gateway token is unknown, expired or revoked",
                               path=request.path)
        context = {"job_id": attempt.job_id, "attempt": attempt.attempt, "path": request.path}
        uid = peer_uid(request)
        if uid is not None and uid != attempt.user:  # unclaimed, or claimed by another job's user
            return self.refuse(403, "permission_error", "user", "this gateway token is another job's", uid=uid,
                               **context)
        if attempt.over_budget():
            self.attempts.judge(attempt, Verdict.BUDGET_EXCEEDED)
            return self.refuse(400, "invalid_request_error", "budget",
                               f"this job used its Claude budget ({attempt.max_tokens} tokens, claude_max_tokens)",
                               **context)
        if request.content_length is not None and request.content_length > self.max_request_bytes:
            return self.refuse(413, "request_too_large", "size",
                               f"request larger than the gateway's limit ({self.max_request_bytes} bytes)", **context)
        body = await self._read_body(request)
        if body is None:
            return self.refuse(413, "request_too_large", "size",
                               f"request larger than the gateway's limit ({self.max_request_bytes} bytes)", **context)
        return await self._proxy(request, attempt, body, context)

    async def _read_body(self, request: web.Request) -> bytes | None:
        body = bytearray()
        while chunk := await request.content.read(_READ_CHUNK):
            body += chunk
            if len(body) > self.max_request_bytes:
                return None
        return bytes(body)

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED_REQUEST_HEADERS}
        headers.update(self._auth)
        if self._oauth:
            betas = [b.strip() for b in headers.pop("anthropic-beta", "").split(",") if b.strip()]
            headers["anthropic-beta"] = ",".join([*betas, OAUTH_BETA] if OAUTH_BETA not in betas else betas)
        return headers

    async def _proxy(self, request: web.Request, attempt: Attempt, body: bytes,
                     context: dict[str, Any]) -> web.StreamResponse:
        if self._session is None:
            raise RuntimeError("the jobs application forwards only once started")
        url = self.upstream + request.path + (f"?{request.query_string}" if request.query_string else "")
        try:
            upstream = await self._session.post(url, data=body, headers=self._upstream_headers(request),
                                                allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError) as error:
            self.refusals["upstream"] += 1
            self.log.warning("upstream unreachable", error=str(error) or type(error).__name__, **context)
            return web.json_response(error_body("api_error", "the Claude gateway cannot reach the Anthropic API"),
                                     status=502)
        async with upstream:
            verdict = _VERDICTS.get(upstream.status)
            if verdict is not None:
                self.attempts.judge(attempt, verdict)
                self.log.warning("upstream refused", status=upstream.status, verdict=verdict, **context)
            streamed = upstream.content_type == "text/event-stream"
            reader = UsageReader(streamed)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _DROPPED_RESPONSE_HEADERS:
                    response.headers.add(name, value)
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    reader.feed(chunk)
                    await response.write(chunk)
            except ConnectionResetError:  # the job hung up mid-answer (aiohttp's own error derives from it)
                self.log.info("the job hung up before the end of the answer", **context)
                return response
            finally:  # a job that hangs up mid-answer still used what the upstream counted so far
                usage = reader.usage() if upstream.status < 400 else Usage(requests=1)
                self.attempts.record(attempt, usage)
        await response.write_eof()  # counted before the job sees the end of the answer
        return response

    # ---- control --------------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            job_id, number, max_tokens = data["jobId"], data["attempt"], data.get("maxTokens", 0)
            ttl = data.get("ttlSeconds", DEFAULT_TTL_S)
            valid = (isinstance(job_id, str) and 0 < len(job_id) <= 200 and isinstance(number, int)
                     and isinstance(max_tokens, int) and max_tokens >= 0
                     and isinstance(ttl, int | float) and ttl > 0)
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            return web.json_response({"error": "expected {jobId: string, attempt: int, maxTokens: int >= 0, "
                                               "ttlSeconds?: number > 0}"}, status=400)
        token, attempt_id = self.attempts.register(job_id, number, max_tokens, ttl)
        self.log.info("attempt registered", job_id=job_id, attempt=number, id=attempt_id, budget=max_tokens)
        return web.json_response({"token": token, "id": attempt_id})

    async def read(self, request: web.Request) -> web.Response:
        report = self.attempts.snapshot(request.match_info["id"])
        if report is None:
            return web.json_response({"error": "no such attempt"}, status=404)
        return web.json_response(report)

    async def delete(self, request: web.Request) -> web.Response:
        entry = self.attempts.delete(request.match_info["id"])
        if entry is None:
            return web.json_response({"error": "no such attempt"}, status=404)
        usage = entry.usage  # (keys named like "token" would be redacted in the log)
        self.log.info("attempt deleted", job_id=entry.job_id, attempt=entry.attempt, id=entry.id,
                      used_input=usage.input_tokens, used_output=usage.output_tokens,
                      used_cache_read=usage.cache_read_tokens, used_cache_creation=usage.cache_creation_tokens,
                      requests=usage.requests, verdict=entry.verdict)
        return web.json_response(entry.report())

    async def read_refusals(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.refusals))


async def start_unix_site(runner: web.AppRunner, path: str, mode: int) -> web.UnixSite:
    """Serves `runner` on a UNIX socket at `path` (a stale one replaced) with `mode`."""
    socket_path = Path(path)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.is_socket():
        socket_path.unlink()
    site = web.UnixSite(runner, path)
    await site.start()
    os.chmod(path, mode)
    return site
