"""A job's only way out: a TCP listener on 127.0.0.1 inside the job's network namespace
(`PrivateNetwork=`: a loopback of its own and nothing else), forwarding each connection to the Claude
gateway's jobs socket (JOBS_SOCKET), the one file of /run/fondation-agent-gateway the job's unit binds in.
Claude Code reaches the gateway as `ANTHROPIC_BASE_URL=http://127.0.0.1:JOB_GATEWAY_PORT`; the gateway
decides what passes.

job_exec.py binds the listener before it execs the CLI (so the port is there before the CLI's first
request) and serves it in a child that dies with the CLI. Runs as the job user, inside the sandbox;
stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
from collections.abc import Callable

from fondation_agent.sandbox.gateway import CLAIM_PATH

CHUNK_BYTES = 64 * 1024
CLAIM_TIMEOUT_S = 30.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over one of the gateway's UNIX sockets (stdlib only: the job's claim, the agent's control calls)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ClaimRefused(Exception):
    """The gateway did not tie the token to this job's user (or cannot be reached)."""


def claim(target: str, token: str) -> None:
    """Ties the attempt's token to the user this process runs as, before anything of the job runs: the
    token is unknown to every other job then, so no other user can have claimed it first."""
    connection = UnixHTTPConnection(target, CLAIM_TIMEOUT_S)
    try:
        connection.request("POST", CLAIM_PATH, headers={"x-api-key": token})
        response = connection.getresponse()
        body = response.read()
    except OSError as error:
        raise ClaimRefused(f"the Claude gateway cannot be reached at {target}: {error}") from None
    finally:
        connection.close()
    if response.status != 200:
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body[:200].decode("utf-8", errors="replace")
        raise ClaimRefused(f"the Claude gateway refused this job's token (HTTP {response.status}): {message}")


def listen(port: int) -> socket.socket:
    """The relay's listening socket on 127.0.0.1:port (0: any free port, for tests)."""
    return socket.create_server(("127.0.0.1", port), backlog=128)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, broken: Callable[[], None]) -> None:
    """One direction, byte for byte as it comes (server-sent events stream through); an end is passed on."""
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:  # either side reset: the connection is over both ways
        broken()


async def _forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: str) -> None:
    try:
        gateway_reader, gateway_writer = await asyncio.open_unix_connection(target)
    except OSError:
        client_writer.close()  # the gateway is down: the CLI sees a refused request, and retries
        return
    writers = (client_writer, gateway_writer)

    def close_both() -> None:
        for writer in writers:
            writer.close()

    try:
        await asyncio.gather(_copy(client_reader, gateway_writer, close_both),
                             _copy(gateway_reader, client_writer, close_both))
    finally:
        close_both()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve(listener: socket.socket, target: str) -> None:
    """Forwards every connection of `listener` to the UNIX socket `target`, until cancelled."""
    server = await asyncio.start_server(lambda reader, writer: _forward(reader, writer, target), sock=listener)
    async with server:
        await server.serve_forever()
