"""The Claude gateway (fondation_agent/sandbox/gateway/): a real aiohttp server on 127.0.0.1 and UNIX
sockets in front of the fake Anthropic API (tests/fixtures/fake_anthropic.py)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fondation_agent.sandbox.gateway import CLAIM_PATH
from fondation_agent.sandbox.gateway.attempts import Usage, Verdict
from fondation_agent.sandbox.gateway.client import (
    ControlClient,
    GatewayUnavailable,
    InProcessGateway,
)
from fondation_agent.sandbox.gateway.server import UsageReader
from fondation_agent.sandbox.relay import UnixHTTPConnection, claim
from tests.fixtures.fake_anthropic import FakeAnthropic

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-ant-real-key"
OAUTH = "sk-ant-oat-real-token"
MESSAGE = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
ONE_ANSWER = Usage(input_tokens=100, output_tokens=20, requests=1)  # what the fake model counts per answer


@pytest.fixture
def fake():
    with FakeAnthropic(api_key=KEY) as api:
        yield api


def started(fake: FakeAnthropic, credential: dict[str, str] | None = None, **settings) -> InProcessGateway:
    return InProcessGateway(credential=credential or {"ANTHROPIC_API_KEY": KEY}, upstream=fake.url,
                            **settings).start()


@pytest.fixture
def gateway(fake):
    running = started(fake)
    yield running
    running.close()


def post(gateway: InProcessGateway, body: dict | bytes, *, token: str | None = None, path: str = "/v1/messages",
         method: str = "POST", headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
    connection = http.client.HTTPConnection(gateway.url.removeprefix("http://"), timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **({"x-api-key": token} if token else {}), **(headers or {})}
    connection.request(method, path, body=data if method == "POST" else None, headers=sent)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, (json.loads(text) if response.getheader("Content-Type", "").startswith(
        "application/json") else text)


def test_a_streamed_answer_goes_through_as_it_comes_and_its_usage_is_counted(fake, gateway):
    registration = gateway.register("job1", 1, 0, 60)
    fake.hold = threading.Event()
    connection = http.client.HTTPConnection(gateway.url.removeprefix("http://"), timeout=30)
    connection.request("POST", "/v1/messages?beta=true", body=json.dumps({**MESSAGE, "stream": True}),
                       headers={"x-api-key": registration.token, "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    # The upstream holds everything after message_start: the job still sees that event now.
    assert response.readline() == b"event: message_start\n"
    assert b'"input_tokens": 100' in response.readline()
    fake.hold.set()
    rest = response.read().decode()
    connection.close()
    assert rest.rstrip().endswith('data: {"type": "message_stop"}')
    assert '"text": "OK."' in rest
    assert [(r["path"], r["auth"]) for r in fake.requests] == [("/v1/messages?beta=true", "api_key")]
    assert gateway.read(registration.id).usage == ONE_ANSWER


def test_a_json_answer_and_token_counting_are_forwarded_and_counted(fake, gateway):
    registration = gateway.register("job1", 1, 0, 60)
    status, answer = post(gateway, MESSAGE, token=registration.token)
    assert status == 200 and answer["content"] == [{"type": "text", "text": "OK."}]
    status, _ = post(gateway, MESSAGE, path="/v1/messages/count_tokens",
                     headers={"Authorization": f"Bearer {registration.token}"})
    assert status == 200
    assert [r["path"] for r in fake.requests] == ["/v1/messages", "/v1/messages/count_tokens"]
    report = gateway.read(registration.id)
    assert report.usage == Usage(input_tokens=200, output_tokens=40, requests=2)
    assert report.verdict is None


def test_an_oauth_token_goes_up_as_a_bearer_with_its_beta_header(fake):
    fake.api_key, fake.oauth_token = "", OAUTH
    running = started(fake, {"CLAUDE_CODE_OAUTH_TOKEN": OAUTH})
    try:
        registration = running.register("job1", 1, 0, 60)
        status, _ = post(running, MESSAGE, token=registration.token,
                         headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"})
    finally:
        running.close()
    assert status == 200
    assert [r["auth"] for r in fake.requests] == ["oauth"]


def test_what_the_gateway_refuses_never_reaches_the_model(fake, gateway):
    registration = gateway.register("job1", 1, 0, 60)
    token = registration.token
    refused = [
        post(gateway, MESSAGE, token=token, path="/v1/models", method="GET"),
        post(gateway, MESSAGE, token=token, path="/v1/complete"),
        post(gateway, MESSAGE, token=token, path="/v1/messages/batches"),
        post(gateway, MESSAGE),  # no token
        post(gateway, MESSAGE, token=KEY),  # the real key is no token of the gateway's
        post(gateway, MESSAGE, token=token + "x"),
        post(gateway, b"x" * (40 * 1024**2), token=token),
    ]
    assert [(status, body["type"], body["error"]["type"]) for status, body in refused] == [
        (404, "error", "not_found_error")] * 3 + [(401, "error", "authentication_error")] * 3 + [
        (413, "error", "request_too_large")]
    assert fake.requests == []
    assert dict(gateway.gateway.refusals) == {"path": 3, "token": 3, "size": 1}
    assert gateway.read(registration.id).usage == Usage()


def test_a_body_past_the_limit_is_refused_even_without_its_length(fake):
    running = started(fake, max_request_bytes=4096)
    try:
        token = running.register("job1", 1, 0, 60).token
        connection = http.client.HTTPConnection(running.url.removeprefix("http://"), timeout=30)
        connection.request("POST", "/v1/messages", body=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]),
                           headers={"x-api-key": token, "Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["error"]["type"]) == (413, "request_too_large")
    finally:
        running.close()
    assert fake.requests == []


def test_the_token_of_a_deleted_or_expired_attempt_is_refused(fake, gateway):
    done, short, other = (gateway.register("job1", 1, 0, 60), gateway.register("job2", 1, 0, 0.05),
                          gateway.register("job3", 1, 0, 60))
    assert post(gateway, MESSAGE, token=done.token)[0] == 200
    assert gateway.delete(done.id).usage == ONE_ANSWER
    time.sleep(0.1)  # past `short`'s time to live
    assert post(gateway, MESSAGE, token=done.token)[0] == 401
    assert post(gateway, MESSAGE, token=short.token)[0] == 401
    assert post(gateway, MESSAGE, token=other.token)[0] == 200, "another attempt's token still works"
    assert gateway.read(done.id) is None and gateway.delete(done.id) is None
    assert len(fake.requests) == 2


def test_an_attempt_past_its_budget_gets_no_further_request(fake, gateway):
    registration = gateway.register("job1", 1, 150, 60)
    assert post(gateway, MESSAGE, token=registration.token)[0] == 200  # 120 tokens
    assert post(gateway, MESSAGE, token=registration.token)[0] == 200  # 240: over, and told next time
    status, body = post(gateway, MESSAGE, token=registration.token)
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert "budget (150 tokens, claude_max_tokens)" in body["error"]["message"]
    report = gateway.read(registration.id)
    assert (report.verdict, report.usage.requests, len(fake.requests)) == (Verdict.BUDGET_EXCEEDED, 2, 2)


@pytest.mark.parametrize(("status", "verdict"), [(401, Verdict.CLAUDE_AUTH), (403, Verdict.CLAUDE_AUTH),
                                                 (429, Verdict.RATE_LIMITED), (529, Verdict.RATE_LIMITED),
                                                 (500, None)])
def test_the_upstreams_refusals_become_the_attempts_verdict(fake, gateway, status, verdict):
    fake.error = status
    registration = gateway.register("job1", 1, 0, 60)
    got, body = post(gateway, MESSAGE, token=registration.token)
    assert got == status and body["type"] == "error", "the job sees the upstream's answer"
    report = gateway.read(registration.id)
    assert (report.verdict, report.usage) == (verdict, Usage(requests=1))


def test_a_refused_credential_outranks_a_later_rate_limit(fake, gateway):
    registration = gateway.register("job1", 1, 0, 60)
    for status in (401, 429):
        fake.error = status
        post(gateway, MESSAGE, token=registration.token)
    assert gateway.read(registration.id).verdict == Verdict.CLAUDE_AUTH


def test_the_control_api_over_its_unix_socket(fake, tmp_path):
    control = str(tmp_path / "control.sock")
    running = started(fake, control_socket=control)
    client = ControlClient(control, url=running.url)
    try:
        assert os.stat(control).st_mode & 0o777 == 0o600
        registration = client.register("job1", 2, 0, 60)
        assert registration.token.startswith("fgw-")
        assert post(running, MESSAGE, token=registration.token)[0] == 200
        assert client.read(registration.id) == client.delete(registration.id)
        assert client.read(registration.id) is None and client.delete(registration.id) is None
        assert post(running, MESSAGE, token=registration.token)[0] == 401
    finally:
        running.close()
    with pytest.raises(GatewayUnavailable, match="unreachable"):
        client.register("job1", 3, 0, 60)


def gateway_settings(tmp_path: Path, upstream: str, credential: str = f"ANTHROPIC_API_KEY={KEY}\n") -> Path:
    (tmp_path / "job.env").write_text(credential)
    settings = tmp_path / "gateway.toml"
    settings.write_text(f'credentials_file = "{tmp_path / "job.env"}"\nupstream = "{upstream}"\n'
                        f'jobs_socket = "{tmp_path / "run" / "jobs.sock"}"\n'
                        f'control_socket = "{tmp_path / "run" / "control.sock"}"\n')
    return settings


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fondation_agent.sandbox.gateway", *args]


def test_check_config_names_what_is_wrong(tmp_path):
    settings = gateway_settings(tmp_path, "http://127.0.0.1:9")
    ok = subprocess.run(gateway_command("check-config", str(settings)), cwd=REPO_ROOT, capture_output=True,
                        text=True)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{settings}: OK")
    settings.write_text(settings.read_text() + "upstreem = 'x'\n")
    bad = subprocess.run(gateway_command("check-config", str(settings)), cwd=REPO_ROOT, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown key(s): upstreem" in bad.stderr
    (tmp_path / "job.env").write_text("OTHER=1\n")
    settings.write_text(settings.read_text().replace("upstreem = 'x'\n", ""))
    empty = subprocess.run(gateway_command("check-config", str(settings)), cwd=REPO_ROOT, capture_output=True,
                           text=True)
    assert empty.returncode == 2 and "holds neither ANTHROPIC_API_KEY= nor CLAUDE_CODE_OAUTH_TOKEN=" in empty.stderr


class Served:
    """`gateway serve` as systemd runs it (NOTIFY_SOCKET), with its sockets under `directory`/run."""

    def __init__(self, directory: Path, upstream: str):
        settings = gateway_settings(directory, upstream)
        self.run = directory / "run"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(directory / "notify.sock"))
        self.notify.settimeout(60)
        self.process = subprocess.Popen(gateway_command("serve", "--settings", str(settings)), cwd=REPO_ROOT,
                                        env={**os.environ, "NOTIFY_SOCKET": str(directory / "notify.sock")},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def control(self) -> ControlClient:
        return ControlClient(str(self.run / "control.sock"))

    def stop(self) -> str:
        """SIGTERM; what it printed (it must have ended cleanly)."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=60)
        self.notify.close()
        assert self.process.returncode == 0, output
        return output


def test_serve_says_ready_forwards_from_its_jobs_socket_and_stops_on_sigterm(fake, tmp_path):
    served = Served(tmp_path, fake.url)
    try:
        assert served.notify.recv(4096).decode().startswith("READY=1")
        run = served.run
        assert (os.stat(run / "jobs.sock").st_mode & 0o777, os.stat(run / "control.sock").st_mode & 0o777) == (
            0o666, 0o660)
        registration = served.control().register("job1", 1, 0, 60)
        claim(str(run / "jobs.sock"), registration.token)  # as job_exec does before the CLI starts
        connection = UnixHTTPConnection(str(run / "jobs.sock"), 30)
        connection.request("POST", "/v1/messages", body=json.dumps(MESSAGE),
                           headers={"x-api-key": registration.token, "Content-Type": "application/json"})
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["content"][0]["text"]) == (200, "OK.")
        connection.close()
        assert served.control().read(registration.id).usage == ONE_ANSWER
    finally:
        output = served.stop()
    assert KEY not in output and registration.token not in output
    assert '"event": "attempt registered"' in output


# Another job: another uid (nobody), with only the standard library and a raw request.
ANOTHER_USER = r"""
import socket, sys
path, method, target, token = sys.argv[1:]
sock = socket.socket(socket.AF_UNIX)
sock.connect(path)
body = b'{"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}'
sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: gateway\r\nx-api-key: {token}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
             .encode() + body)
print(sock.makefile("rb").readline().decode().split()[1])
"""
# The CLI job_exec starts: a request with its own token, straight to the jobs socket.
JOB_CLI = """
import json, os, sys
from fondation_agent.sandbox.relay import UnixHTTPConnection
connection = UnixHTTPConnection(sys.argv[1], 30)
connection.request("POST", "/v1/messages", body=sys.argv[2], headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"]})
print(connection.getresponse().status)
"""
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: nobody cannot reach the venv's interpreter under /root


def test_a_token_is_its_job_users_claimed_by_job_exec_and_refused_from_any_other_user(fake):
    directory = Path(tempfile.mkdtemp(prefix="fgw-test-"))
    directory.chmod(0o755)  # nobody reaches the jobs socket (0666), as a job user does through its relay
    served = Served(directory, fake.url)
    try:
        assert served.notify.recv(4096).decode().startswith("READY=1")
        (directory / "run").chmod(0o755)
        jobs = str(directory / "run" / "jobs.sock")
        victim = served.control().register("victim", 1, 0, 60)

        def as_another_user(token: str, path: str = "/v1/messages") -> str:
            return subprocess.run([SYSTEM_PYTHON, "-I", "-c", ANOTHER_USER, jobs, "POST", path, token], user=NOBODY,
                                  capture_output=True, text=True, timeout=60, check=True).stdout.strip()

        def job_exec(token: str) -> subprocess.CompletedProcess:
            spec = directory / "spec.json"
            spec.write_text(json.dumps({"argv": [sys.executable, "-c", JOB_CLI, jobs, json.dumps(MESSAGE)],
                                        "env": {"ANTHROPIC_API_KEY": token}, "relay": {"port": 0, "socket": jobs}}))
            return subprocess.run([sys.executable, "-m", "fondation_agent.sandbox.job_exec", str(spec)], cwd=REPO_ROOT,
                                  capture_output=True, text=True, timeout=60, check=False)

        assert as_another_user(victim.token) == "403"  # not claimed yet: no user may use it
        ran = job_exec(victim.token)  # the victim's job claims it (as root here), then its CLI uses it
        assert (ran.returncode, ran.stdout.strip()) == (0, "200"), ran.stderr
        assert as_another_user(victim.token) == "403"  # a stolen token is worth nothing to another job
        assert as_another_user(victim.token, CLAIM_PATH) == "403"  # nor can that job claim it for itself
        assert served.control().read(victim.id).usage == ONE_ANSWER  # the victim's request only
        assert len(fake.requests) == 1

        refused = job_exec("fgw-unknown")  # a token the gateway refuses: the CLI never starts
        assert refused.returncode != 0 and refused.stdout == ""
        assert "the Claude gateway refused this job's token (HTTP 401)" in refused.stderr
        refusals = ControlClient(str(directory / "run" / "control.sock"))._call("GET", "/refusals")
        assert refusals == {"user": 3, "token": 1}
    finally:
        output = served.stop()
        shutil.rmtree(directory, ignore_errors=True)
    assert output.count('"event": "attempt claimed"') == 1 and victim.token not in output


def test_usage_is_read_from_events_cut_anywhere_and_from_json_bodies():
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1,
                                                            "cache_read_input_tokens": 300,
                                                            "cache_creation_input_tokens": 40}}}
    delta = {"type": "message_delta", "usage": {"output_tokens": 25}}
    stream = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in (start, delta)).encode()
    reader = UsageReader(streamed=True)
    for index in range(len(stream)):  # one byte at a time: every cut of every line
        reader.feed(stream[index:index + 1])
    assert reader.usage() == Usage(7, 25, 300, 40, 1)
    body = UsageReader(streamed=False)
    body.feed(json.dumps({"type": "message", "usage": {"input_tokens": 3, "output_tokens": 4}}).encode())
    assert body.usage() == Usage(3, 4, 0, 0, 1)
    assert UsageReader(streamed=False).usage() == Usage(requests=1), "an answer without usage is a request"
