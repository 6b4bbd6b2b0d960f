#!/usr/bin/env python3
"""The VM tier's test CLI, installed in the guest as /usr/local/lib/fondation-test/guest_cli.py.

Usage: guest_cli.py REPO OUTPUT MODE — the mode comes from the job's prompt. Modes of its own:
  oom:MB          allocate (and touch) MB MiB, 10 MiB at a time; if it survives, write a course anyway
  forkbomb:S      every process forks as fast as it can for S seconds; the first one then reports what
                  it saw (its unit's pids.max, how many forks failed) and exits 1
  steal:PID       try to read the worker token every way a job user could (PID = the agent's pid) and
                  write what each try got into the output documents
  relay:MARKER    print lines carrying MARKER on stdout (and stderr), then write a course
  await[:X]       listen on an abstract UNIX socket (VICTIM_SOCKET), wait for a file GO in the clone (the
                  test writes it), then write a course: a victim
  hostile         listen for inbound connections on INBOUND_PORT, wait for GO (it names the victim's job
                  id, the gateway's pid and the victim's gateway token), then try every escape of a job
                  (read, plant, stop the victim, systemd managers, limits, cron, at, setuid, the credential,
                  another job's token, the network, …), leave what
                  it can behind for the next job, and write what each try got
  fill            fallocate 200G, then write its clone, home and /tmp until the disk is full; exit 1
  inspect         report what a job finds of earlier jobs (/dev/shm, /tmp, /var/tmp, its home)
  pino:MARKER     like the real CLI: pino JSON lines carrying MARKER at levels info, warn, error and
                  fatal (one with an escape sequence), [FONDATION_STEP_N/6] steps, then write a course
Anything else (succeed, slow:S, hang, crash, …) is handed to fake_cli.py beside this file (the host
tests' stand-in, tests/fixtures/fake_cli.py).
"""

import contextlib
import ctypes
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = ["Extracting abstractions", "Analyzing relationships", "Determining order",
         "Generating chapters", "Reviewing chapters", "Creating tutorials"]


def progress(step: int) -> None:
    print(f"[PROGRESS] Step {step}/6: {STEPS[step - 1]}", flush=True)


def write_course(output: Path, body: str = "hello\n") -> None:
    (output / "00_index.md").write_text("---\ntitle: Index\nkind: toc\nchapterIndex: 0\n---\n# Index\n")
    (output / "01_report.md").write_text("# Report\n" + body)


def oom(output: Path, megabytes: int) -> int:
    progress(1)
    hoard = []
    for i in range(megabytes // 10):
        hoard.append(bytearray(b"x" * (10 * 1024 * 1024)))  # really written, so really resident
        if i % 10 == 0:
            print(f"allocated {(i + 1) * 10} MiB", flush=True)
    print(f"allocated {megabytes} MiB and was not killed", flush=True)
    write_course(output, f"survived {megabytes} MiB\n")
    return 0


def fill(repo: str) -> int:
    """Asks for 200 GB at once, then writes its clone, home and /tmp full; reports what each took."""
    progress(1)
    done = subprocess.run(["fallocate", "-l", "200G", f"{repo}/huge"], capture_output=True, text=True, check=False)
    print(f"fallocate 200G: exit {done.returncode} {done.stderr.strip()}", flush=True)
    chunk = b"x" * (1024 * 1024)
    for place in (Path(repo), Path.home(), Path("/tmp")):
        written = 0
        try:
            with open(place / "fill", "wb") as out:
                while True:
                    out.write(chunk)
                    out.flush()
                    written += 1
        except OSError as error:
            print(f"fill {place}: {written} MiB, then {error.strerror}", flush=True)
    return 1


def own_cgroup() -> Path:
    line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::"))
    return Path("/sys/fs/cgroup") / line[3:].lstrip("/")


def forkbomb(output: Path, seconds: float) -> int:
    """Its cgroup is hidden from the job: the test watches pids.current and pids.max from the host."""
    progress(1)
    failures = Path(output) / ".fork-failures"
    end = time.monotonic() + seconds
    bomb = os.fork()
    if bomb == 0:  # the bomb: every process forks forever; nothing ever exits
        # Off the agent's pipes, so that this test is about TasksMax, not about who holds stdout open.
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        failed = 0
        while True:
            try:
                if os.fork() == 0:
                    failed = 0
            except OSError:
                failed += 1
                if failed == 1:
                    with contextlib.suppress(OSError), open(failures, "a") as log:
                        log.write("x")
                time.sleep(0.001)
    time.sleep(max(0.0, end - time.monotonic()))
    denied = failures.stat().st_size if failures.exists() else 0
    print(f"fork bomb report: {denied} processes saw fork() fail", flush=True)
    print(f"fork bomb ran for {seconds:g} s and was contained", file=sys.stderr, flush=True)
    return 1


def _try(label: str, action) -> str:
    try:
        got = action()
    except Exception as error:  # every failure is a result here
        return f"## {label}\nDENIED {type(error).__name__}: {error}\n"
    if isinstance(got, bytes):
        got = got.decode("utf-8", errors="replace")
    got = str(got)
    return f"## {label}\nGOT {len(got)} characters:\n{got[:20000]}\n"


def _read_memory(pid: str) -> str:
    """What a debugger would read: every readable mapping (printable strings of it, 400 KB at most)."""
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        if perms.startswith("r"):
            start, end = (int(x, 16) for x in span.split("-"))
            regions.append((start, end))
    found, size = [], 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for start, end in regions:
            with contextlib.suppress(OSError, ValueError, OverflowError):
                memory.seek(start)
                data = memory.read(min(end - start, 64 * 1024 * 1024))
                for match in re.finditer(rb"[\x21-\x7e]{12,200}", data):
                    found.append(match.group().decode())
                    size += len(found[-1]) + 1
                    if size > 400_000:
                        return "\n".join(found)
    return "\n".join(found)


def steal(output: Path, pid: str) -> int:
    progress(1)
    tries = [
        ("token file", lambda: Path("/etc/fondation-agent/worker-token").read_text()),
        ("config dir listing", lambda: "\n".join(os.listdir("/etc/fondation-agent"))),
        ("credentials dir listing", lambda: "\n".join(os.listdir("/run/credentials/fondation-agent.service"))),
        ("credential", lambda: Path("/run/credentials/fondation-agent.service/worker-token").read_text()),
        ("agent environ", lambda: Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n")),
        ("agent cmdline", lambda: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")),
        ("agent fds", lambda: "\n".join(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))),
        ("agent root", lambda: Path(f"/proc/{pid}/root/etc/fondation-agent/worker-token").read_text()),
        ("agent memory", lambda: _read_memory(pid)),
        ("sudo", lambda: subprocess.run(["sudo", "-n", "cat", "/etc/fondation-agent/worker-token"],
                                        capture_output=True, text=True, timeout=30, check=True).stdout),
        ("own environment", lambda: "\n".join(f"{k}={v}" for k, v in os.environ.items())),
        ("whoami", lambda: f"uid={os.getuid()} gid={os.getgid()} groups={os.getgroups()}"),
    ]
    report = "".join(_try(label, action) for label, action in tries)
    print(report, flush=True)  # the journal gets it too: the token must not be there either
    write_course(output, report)
    return 0


def relay(output: Path, marker: str) -> int:
    for step in range(1, 7):
        progress(step)
        print(f"relayed line {step} {marker}", flush=True)
    print(f"relayed stderr line {marker}", file=sys.stderr, flush=True)
    write_course(output, f"{marker}\n")
    return 0


def pino(output: Path, marker: str) -> int:
    def log(level: int, msg: str, **fields) -> None:
        print(json.dumps({"level": level, "time": int(time.time() * 1000), "pid": os.getpid(),
                          "hostname": "guest", "msg": msg, **fields}), flush=True)

    for step in range(1, 7):
        log(30, f"[FONDATION_STEP_{step}/6] {STEPS[step - 1]}", step=f"{step}/6")
    log(30, f"info line {marker}", detail="all fine")
    log(40, f"warn line {marker}")
    log(50, f"error line {marker}", error="something broke")
    log(60, f"fatal line {marker}")
    log(30, f"\x1b[31mcolored\x1b[0m line {marker}")
    write_course(output, f"{marker}\n")
    return 0


WORKSPACES = Path("/var/lib/fondation-agent/workspaces")
MARK = "hostile-mark"
JOBS_CGROUP = Path("/sys/fs/cgroup/fondation.slice/fondation-jobs.slice")
IO_URING_SETUP = 425  # x86_64
LEFT_BEHIND = (Path("/dev/shm") / MARK, Path("/tmp") / MARK, Path("/var/tmp") / MARK)
VICTIM_SOCKET = "\0fondation-test-victim"
INBOUND_PORT = 7777
GATEWAY = "127.0.0.1:8790"  # the job's relay to the Claude gateway
CONTROL_SOCKET = "/run/fondation-agent-gateway/control.sock"
CLAIM_PATH = "/fondation-gateway/claim"  # fondation_agent.sandbox.gateway's (this file runs without the package)
KEY_PREFIXES = (b"sk-ant-", b"CLAUDE_CODE_OAUTH_TOKEN=")
SEARCHED = ("/etc", "/run", "/var", "/tmp", "/dev/shm", "/srv", "/home", "/root", "/usr/local")


def await_go(repo: str) -> str:
    go = Path(repo) / "GO"
    deadline = time.monotonic() + 600
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no GO file")
        time.sleep(0.2)
    return go.read_text().strip()


def victim(repo: str, output: Path) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:  # for the hostile job to try
        listener.bind(VICTIM_SOCKET)
        listener.listen(4)
        progress(1)
        await_go(repo)
    write_course(output, "victim course\n")
    return 0


def _command(*argv: str, stdin: str = "") -> str:
    """A command's output; a failure (non-zero status) is a refusal."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise PermissionError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def _connect(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=10) as sock:
        sock.settimeout(10)
        return f"connected; got {sock.recv(100)!r}"


def _udp(address: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"hostile datagram", (address, port))
        return "sent"


def _connect_to(family: int, address: object) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        return "connected"


def _ping(address: str) -> str:
    """An ICMP echo request, as an unprivileged `ping` sends it (a ping socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as sock:
        sock.sendto(b"\x08\x00\x00\x00\x00\x01\x00\x01hostile", (address, 0))
        return "sent"


def _gateway(method: str, path: str, key: str) -> str:
    """A request to the Claude gateway through the job's relay; an HTTP error status is a refusal."""
    import http.client
    connection = http.client.HTTPConnection(GATEWAY, timeout=30)
    body = json.dumps({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"x-api-key": key, "content-type": "application/json", "anthropic-version": "2023-06-01"}
    connection.request(method, path, body=body if method == "POST" else None, headers=headers)
    response = connection.getresponse()
    answer = response.read(300)
    if response.status >= 400:
        raise PermissionError(f"HTTP {response.status}: {answer!r}")
    return f"HTTP {response.status}: {answer!r}"


def _environments() -> str:
    """The environment of every process this job can see (its own: the CLI, its relay)."""
    seen = []
    for entry in sorted(Path("/proc").iterdir(), key=lambda p: p.name):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                variables = (entry / "environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                seen.append(f"{entry.name}: {variables}")
    return "\n".join(seen)


def _processes() -> str:
    return " ".join(entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _search_files() -> str:
    """Every readable file under SEARCHED (1 MiB of each): the lines that look like a Claude credential."""
    found = []
    for top in SEARCHED:
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
            for name in files:
                with contextlib.suppress(OSError), open(os.path.join(root, name), "rb") as handle:
                    for line in handle.read(1024 * 1024).splitlines():
                        if any(prefix in line for prefix in KEY_PREFIXES):
                            found.append(f"{root}/{name}: {line[:200]!r}")
    return "\n".join(found) or "nothing"


def _listen_inbound() -> list[socket.socket]:
    """Listeners on every address of the job's network, for the test to try from the host."""
    listeners = [socket.create_server(("0.0.0.0", INBOUND_PORT))]  # noqa: S104 (the point of the try)
    with contextlib.suppress(OSError):  # no IPv6 in the job's namespace is fine too
        listeners.append(socket.create_server(("::", INBOUND_PORT), family=socket.AF_INET6,
                                              dualstack_ipv6=False))
    return listeners


def _journal() -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"MESSAGE=hostile entry\nPRIORITY=6\n", "/run/systemd/journal/socket")
        return "sent"


def _io_uring() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(IO_URING_SETUP, 8, params)
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    os.close(fd)
    return "a ring was set up"


def _signal_others() -> str:
    """kill(pid, 0) on every pid: how many processes of anyone else (not of this job's unit: its relay is
    its own) this job could signal."""
    return f"signalable: {[pid for pid in range(2, 32768) if _can_signal(pid) and not _own_unit(pid)][:20]}"


def _own_unit(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text() == Path("/proc/self/cgroup").read_text()
    except OSError:
        return False


def _can_signal(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _daemon() -> str:
    """A double-forked sleeper in its own session: it must not outlive the job's unit."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv("/bin/sleep", ["sleep", "3600"])  # noqa: S606
        os._exit(0)
    os.wait()
    return "started"


def hostile(repo: str, output: Path) -> int:
    inbound = _listen_inbound()
    progress(1)
    victim_id, gateway_pid, victim_token = await_go(repo).split()
    own_id = os.environ.get("FONDATION_JOB_ID", "")
    victim_ws = WORKSPACES / f"{victim_id}-1"
    own_ws = Path(repo).parent
    own_unit = f"fondation-job-{own_id}-1.service"
    tries = [
        ("whoami", lambda: f"uid={os.getuid()} gid={os.getgid()} groups={os.getgroups()}"),
        ("no new privileges", lambda: next(line for line in Path("/proc/self/status").read_text().splitlines()
                                           if line.startswith("NoNewPrivs"))),
        ("list workspaces", lambda: " ".join(sorted(os.listdir(WORKSPACES)))),
        ("read victim repo", lambda: (victim_ws / "repo" / "README.md").read_text()),
        ("plant victim output", lambda: (victim_ws / "output" / "99_planted.md").write_text("# planted\n")),
        ("victim owner marker", lambda: (victim_ws / ".fondation-owner").write_text("someone-else\n")),
        ("own owner marker", lambda: (own_ws / ".fondation-owner").write_text("someone-else\n")),
        ("signal others", _signal_others),
        ("stop victim unit", lambda: _command("systemctl", "stop", f"fondation-job-{victim_id}-1.service")),
        ("systemctl user", lambda: _command("systemctl", "--user", "list-units")),
        ("systemd-run user", lambda: _command("systemd-run", "--user", "sleep", "600")),
        ("systemd-run system", lambda: _command("systemd-run", "sleep", "600")),
        ("set-property", lambda: _command("systemctl", "set-property", "--runtime", own_unit, "MemoryMax=infinity",
                                          "TasksMax=infinity")),
        ("cgroup limits", lambda: _raise_own_memory_max()),
        ("read job units", lambda: " ".join(os.listdir("/run/systemd/transient"))),
        ("list job cgroups", lambda: " ".join(os.listdir(JOBS_CGROUP))),
        ("journal socket", _journal),
        ("io_uring", _io_uring),
        ("crontab", lambda: _command("crontab", "-", stdin=f"* * * * * touch /tmp/{MARK}-cron\n")),
        ("at", lambda: _command("at", "now", "+", "1", "minute", stdin=f"touch /tmp/{MARK}-at\n")),
        ("sudo", lambda: _command("sudo", "-n", "true")),
        ("su", lambda: _command("su", "-c", "true")),
        ("write /etc", lambda: Path("/etc", MARK).write_text("x")),
        ("write /opt", lambda: Path("/opt", MARK).write_text("x")),
        ("write state dir", lambda: Path("/var/lib/fondation-agent", MARK).write_text("x")),
        ("write cron spool", lambda: Path("/var/spool/cron/crontabs", MARK).write_text("x")),
        # The Claude credential: files, environments, the gateway's process.
        ("read credentials file", lambda: Path("/etc/fondation-agent/job.env").read_text()),
        ("read gateway settings", lambda: Path("/etc/fondation-agent/gateway.toml").read_text()),
        ("environments", _environments),
        ("processes", _processes),
        ("gateway environ", lambda: Path(f"/proc/{gateway_pid}/environ").read_bytes()[:300]),
        ("gateway memory", lambda: _read_memory(gateway_pid)),
        ("search files", _search_files),
        # The network: the job's namespace has a loopback and the relay to the gateway, nothing else.
        ("agent port", lambda: _connect("127.0.0.1", 9810)),
        ("loopback sshd", lambda: _connect("127.0.0.1", 22)),
        ("ipv6 loopback sshd", lambda: _connect_to(socket.AF_INET6, ("::1", 22))),
        ("host address sshd", lambda: _connect("10.0.2.15", 22)),
        ("internet http", lambda: _connect("198.51.100.7", 80)),
        ("ipv6 internet http", lambda: _connect_to(socket.AF_INET6, ("2001:db8::7", 80))),
        ("metadata http", lambda: _connect("169.254.169.254", 80)),
        ("private address", lambda: _connect("10.77.0.1", 80)),
        ("dns to the resolver", lambda: _udp("169.254.169.254", 53)),
        ("dns lookup", lambda: repr(socket.getaddrinfo("example.com", 443))),
        ("metadata udp", lambda: _udp("169.254.169.254", 123)),
        ("icmp", lambda: _ping("10.0.2.2")),
        ("abstract socket of another job", lambda: _connect_to(socket.AF_UNIX, VICTIM_SOCKET)),
        ("gateway control socket", lambda: _connect_to(socket.AF_UNIX, CONTROL_SOCKET)),
        ("forged token at the gateway", lambda: _gateway("POST", "/v1/messages", "fgw-forged-" + "0" * 32)),
        ("another job's token at the gateway", lambda: _gateway("POST", "/v1/messages", victim_token)),
        ("claim another job's token", lambda: _gateway("POST", CLAIM_PATH, victim_token)),
        ("own token beyond the messages api", lambda: _gateway("GET", "/v1/models",
                                                               os.environ.get("ANTHROPIC_API_KEY", ""))),
        ("leave files", lambda: [path.write_text("left behind\n") for path in LEFT_BEHIND]),
        ("poison home", lambda: (Path.home() / ".gitconfig").write_text(f"[core]\n\tfsmonitor = touch /tmp/{MARK}\n")),
        ("daemon", _daemon),
    ]
    report = "".join(_try(label, action) for label, action in tries)
    for listener in inbound:
        listener.close()
    print(report, flush=True)
    write_course(output, report)
    return 0


def _raise_own_memory_max() -> str:
    (own_cgroup() / "memory.max").write_text("max\n")
    return "raised"


def inspect(output: Path) -> int:
    progress(1)
    found = [str(path) for path in (*LEFT_BEHIND, Path.home() / ".gitconfig") if path.exists()]
    report = f"## whoami\nuid={os.getuid()}\n## found\n{' '.join(found) or 'nothing'}\n"
    write_course(output, report)
    return 0


def main() -> int:
    if sys.argv[1:] == ["--version"]:  # the agent's preflight
        print("guest-cli 1.0.0")
        return 0
    repo, output, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    name, _, argument = mode.partition(":")
    if name == "oom":
        return oom(output, int(argument))
    if name == "forkbomb":
        return forkbomb(output, float(argument))
    if name == "steal":
        return steal(output, argument)
    if name == "relay":
        return relay(output, argument)
    if name == "await":
        return victim(repo, output)
    if name == "hostile":
        return hostile(repo, output)
    if name == "fill":
        return fill(repo)
    if name == "inspect":
        return inspect(output)
    if name == "pino":
        return pino(output, argument)
    os.execv(sys.executable, [sys.executable, str(HERE / "fake_cli.py"), repo, str(output), mode])  # noqa: S606
    return 127


if __name__ == "__main__":
    sys.exit(main())
