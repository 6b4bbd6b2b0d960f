"""The job's relay to the Claude gateway (relay.py) and its start by job_exec.py, on this machine: a TCP
port on 127.0.0.1 forwarding to a UNIX socket. Its place in a job's network namespace is the VM tier's
(tests/system/test_35_hostile.py, test_70_claude_code.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from fondation_agent.sandbox import relay

REPO = Path(__file__).resolve().parents[2]


async def _upper_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The gateway's stand-in: answers each line at once, upper-cased, and says bye at the client's end."""
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.write(b"bye\n")
    await writer.drain()
    writer.close()


def test_each_connection_streams_both_ways_to_the_socket_and_ends_are_passed_on(tmp_path: Path) -> None:
    target = str(tmp_path / "jobs.sock")

    async def scenario() -> list[bytes]:
        gateway = await asyncio.start_unix_server(_upper_server, target)
        listener = relay.listen(0)
        port = listener.getsockname()[1]
        serving = asyncio.create_task(relay.serve(listener, target))
        heard = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for line in (b"one\n", b"two\n"):  # each answer comes before the next question: nothing is held back
                writer.write(line)
                await writer.drain()
                heard.append(await asyncio.wait_for(reader.readline(), 30))
            writer.write_eof()
            heard.append(await asyncio.wait_for(reader.read(), 30))  # the gateway's last words, then the end
            writer.close()
            down = tmp_path / "nothing.sock"  # a gateway that is not there: the connection is closed at once
            listener_down = relay.listen(0)
            serving_down = asyncio.create_task(relay.serve(listener_down, str(down)))
            reader, writer = await asyncio.open_connection("127.0.0.1", listener_down.getsockname()[1])
            heard.append(await asyncio.wait_for(reader.read(), 30))
            writer.close()
            serving_down.cancel()
        finally:
            serving.cancel()
            gateway.close()
        return heard

    assert asyncio.run(scenario()) == [b"ONE\n", b"TWO\n", b"bye\n", b""]


# The CLI's stand-in: finds the relay (its child) and its port, asks through it, prints the answer and the pid.
CLI = """
import os, socket, sys
me = str(os.getpid())
def parent(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError:  # a process of the machine's that just ended
        return ""
child = next(p for p in os.listdir("/proc") if p.isdigit() and parent(p) == me)
inodes = {os.readlink(f"/proc/{child}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{child}/fd")
          if os.readlink(f"/proc/{child}/fd/{fd}").startswith("socket:[")}
port = next(int(f[1].split(":")[1], 16) for f in (l.split() for l in open("/proc/net/tcp").readlines()[1:])
            if f[9] in inodes and f[3] == "0A")
with socket.create_connection(("127.0.0.1", port)) as conn:
    conn.sendall(b"through the relay\\n")
    conn.shutdown(socket.SHUT_WR)
    answer = conn.makefile("rb").read().decode()
print(child, answer.replace("\\n", " ").strip())
print(sorted(os.listdir("/proc/self/fd")))
"""


def test_job_exec_starts_the_relay_before_the_cli_and_it_ends_with_the_cli(tmp_path: Path) -> None:
    target = tmp_path / "jobs.sock"
    loop = asyncio.new_event_loop()
    gateway = loop.run_until_complete(asyncio.start_unix_server(_upper_server, str(target)))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"argv": [sys.executable, "-c", CLI], "env": {},
                                "relay": {"port": 0, "socket": str(target)}}))
    try:
        done = subprocess.run([sys.executable, "-m", "fondation_agent.sandbox.job_exec", str(spec)],
                              capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    finally:
        loop.call_soon_threadsafe(gateway.close)
        loop.call_soon_threadsafe(loop.stop)
    assert done.returncode == 0, done.stderr
    first, fds = done.stdout.splitlines()
    relay_pid, answer = first.split(" ", 1)
    assert answer == "THROUGH THE RELAY bye"
    assert json.loads(fds.replace("'", '"')) == ["0", "1", "2", "3"]  # 3: the listing itself; no relay socket
    deadline = time.monotonic() + 30
    while Path(f"/proc/{relay_pid}").exists() and "\nState:\tZ" not in _status(relay_pid):
        assert time.monotonic() < deadline, f"the relay {relay_pid} outlived the CLI"
        time.sleep(0.05)


def _status(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "\nState:\tZ"  # gone
