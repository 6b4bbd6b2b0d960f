"""Start and stop a localconvex server (localconvex/server.ts) for tests.

    with LocalConvex(state_file=tmp_path / "state.json") as backend:
        ConvexHttp(backend.url, admin_key=backend.admin_key).mutation("operator:enqueue", {...})
        ConvexHttp(backend.url, auth_token=identity_token("alice")).query("jobs:list", {})
        backend.kill()    # SIGKILL: only acknowledged mutations survive
        backend.start()   # same port, state restored from the file

Each server gets an admin key (generated unless given) in its environment as CONVEX_ADMIN_KEY.

The server's stdout/stderr go to files in `log_dir` (never to an unread pipe, which
would block the server once full); `stderr_text()` returns what it logged. Log
directories are removed when Python exits, unless LOCALCONVEX_KEEP_LOGS is set.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER = REPO_ROOT / "localconvex" / "server.ts"
READY = re.compile(r"^localconvex ready on (http://127\.0\.0\.1:(\d+))$", re.MULTILINE)

TEST_ISSUER = "https://localconvex.test"
_running: set[LocalConvex] = set()
_log_dirs: list[Path] = []


@atexit.register
def _clean_up() -> None:
    for backend in list(_running):
        backend.kill()
    if not os.environ.get("LOCALCONVEX_KEEP_LOGS"):
        for log_dir in _log_dirs:
            shutil.rmtree(log_dir, ignore_errors=True)


def identity_token(subject: str, **claims: str) -> str:
    """An unsigned JWT whose claims localconvex takes as the caller's identity (it verifies nothing)."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'iss': TEST_ISSUER, 'sub': subject, **claims})}."


class LocalConvex:
    def __init__(
        self,
        *,
        state_file: Path | None = None,
        token: str | None = "test-worker-token",  # noqa: S107 - a test token
        port: int = 0,
        functions_dir: Path | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        admin_key: str | None = None,
    ) -> None:
        self.state_file = state_file
        self.token = token
        # None: a new random key; "": none (then no admin key is accepted).
        self.admin_key = secrets.token_hex(32) if admin_key is None else admin_key
        self.port = port
        self.functions_dir = functions_dir
        self.extra_env = env or {}
        self.ready_timeout = ready_timeout
        self.url: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.log_dir = Path(tempfile.mkdtemp(prefix="localconvex-"))
        _log_dirs.append(self.log_dir)

    def command(self) -> list[str]:
        # `node --import tsx` instead of the tsx CLI: one process (signals reach the
        # server itself, SIGKILL leaves no orphan) and ~0.1 s faster to start.
        cmd = [
            shutil.which("node") or "node",
            "--import",
            "tsx",
            str(SERVER),
            "--address",
            f"127.0.0.1:{self.port}",
        ]
        if self.state_file is not None:
            cmd += ["--state", str(self.state_file)]
        if self.functions_dir is not None:
            cmd += ["--functions", str(self.functions_dir)]
        return cmd

    def start(self) -> LocalConvex:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("localconvex is already running")
        env = {**os.environ, **self.extra_env}
        env.pop("FONDATION_WORKER_TOKEN", None)
        if self.token is not None:
            env["FONDATION_WORKER_TOKEN"] = self.token
        env["CONVEX_ADMIN_KEY"] = self.admin_key  # the environment, not argv: ps shows argv to everyone
        stdout_path, stderr_path = self.log_dir / "stdout.log", self.log_dir / "stderr.log"
        with open(stdout_path, "wb") as out, open(stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: kill() takes any helper processes too
            )
        _running.add(self)
        self.returncode = None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            match = READY.search(stdout_path.read_text(errors="replace"))
            if match:
                self.url, self.port = match.group(1), int(match.group(2))
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                _running.discard(self)
                raise RuntimeError(
                    f"localconvex exited with {self.returncode} before it was ready:\n{self.stderr_text()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"localconvex not ready after {self.ready_timeout} s:\n{self.stderr_text()}"
                )
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the server flushes its state and exits 0); SIGKILL after `timeout` s."""
        if self.proc is None or self.proc.poll() is not None:
            return self._reap()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL the server's process group, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return self._reap()

    def _reap(self) -> int | None:
        _running.discard(self)
        if self.proc is not None:
            self.returncode = self.proc.returncode
        return self.returncode

    def usage(self) -> dict:
        """What each function's executions cost since the start or the last reset (GET /_localconvex/usage)."""
        return self._usage_request("GET", "/_localconvex/usage")

    def reset_usage(self) -> dict:
        """Zeroes the accounting (the admin key's privilege)."""
        return self._usage_request("POST", "/_localconvex/usage/reset", {"Authorization": f"Convex {self.admin_key}"})

    def _usage_request(self, method: str, path: str, headers: dict[str, str] | None = None) -> dict:
        if self.url is None:
            raise RuntimeError("localconvex is not running")
        # Our own server's http:// loopback URL.
        request = urllib.request.Request(self.url + path, method=method, headers=headers or {})  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)

    def stderr_text(self) -> str:
        path = self.log_dir / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> LocalConvex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
