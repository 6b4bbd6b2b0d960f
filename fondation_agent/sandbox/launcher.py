"""The job launcher: the one root process of fondation-agent. It starts each job as a hardened transient
system service under a free user of the job-user pool, and nothing else.

systemd runs one instance per connection (fondation-jobs-launcher.socket, Accept=yes:
/run/fondation-jobs-launcher.sock, root:fondation 0660); `fondation-jobs-launcher@.service` execs
`python3 -I -m fondation_agent.sandbox.launcher` with the connection on fd 0. Only the agent's uid may talk
to it (SO_PEERCRED, checked before anything is read). One request per connection, a JSON line:

- `run`: unit, description, workspace, argv, env, limits, plus the CLI's stdout and stderr pipes
  (SCM_RIGHTS). The launcher takes a pool user no process runs as (a lock per user while the job
  lives), gives it the workspace's repo/, output/, home/ and tmp/, writes the job's argv and environment
  into the workspace's job spec (the job user's, 0400: never a unit property any local user can
  read; job_exec.py execs it), and runs `systemd-run --pipe --wait` with the properties of
  `job_properties()`: the agent chooses only the limits, never the sandbox. It answers `started`,
  then, once the unit is gone, `finished` with systemd's Result and the exit status, after handing
  the workspace back to the agent (chown).
- `disk`: gives a new, empty workspace a file system of its own, `disk_max_bytes` large (reserved on
  the host with fallocate, so a job that fills it fills nothing else): workspace, home and /tmp of
  the job all live on it. Mounted by PID 1 (systemd-mount), in the host's namespace.
- `release`: unmounts a workspace's file system and deletes it (the agent has read what it needs).
- `stop`: stops a job unit (SIGTERM, SIGKILL after TimeoutStopSec). The launcher of its `run` answers.
- `leftovers`: stops the units an earlier run of a worker left, hands its workspaces back, and
  releases the file systems of its workspaces.

Every field is checked against a whole pattern; anything else is refused with one error line. A job
holds no secret worth stealing: the Claude credential stays with the Claude gateway
(fondation-agent-gateway.service), which the job reaches only through its relay (relay.py) and the
gateway's jobs socket, bound into a network namespace of its own with nothing else in it.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fondation_agent.sandbox.gateway import JOB_GATEWAY_PORT, JOBS_SOCKET

SOCKET_PATH = "/run/fondation-jobs-launcher.sock"
AGENT_USER = "fondation"
STATE_DIR = Path("/var/lib/fondation-agent")
WORKSPACES = STATE_DIR / "workspaces"  # the only place a job's workspace may be (config.temp_dir)
WORKSPACE_PARTS = ("repo", "output", "home", "tmp")  # given to the job; the rest stays the agent's
DISKS = STATE_DIR / "disks"  # root's: <worker tag>/<workspace>.img, one file system per job
MIN_DISK_BYTES, MAX_DISK_BYTES = 64 * 1024**2, 64 * 1024**4
JOB_CREDENTIALS = "/etc/fondation-agent/job.env"  # the Claude credential: the gateway's alone (config.py)
LOCK_DIR = Path("/run/fondation-jobs-launcher")
SLICE = "fondation-jobs.slice"
GATEWAY_RUNTIME_DIR = os.path.dirname(JOBS_SOCKET)  # hidden from jobs but for JOBS_SOCKET
POOL_USER = re.compile(r"^fondation-job-[0-9]{1,3}$")
UNIT_PATTERN = re.compile(r"^fondation-job-[A-Za-z0-9_]{1,64}-[0-9]{1,9}$")
WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}-[0-9]{1,9}$")
OWNER_FILE = ".fondation-owner"  # workspace.OWNER_FILE
JOB_SPEC = ".job-spec.json"  # in the workspace: the job's argv and environment (job_exec.py)
# The jobs' slice's cgroup directory (fondation-jobs.slice nests in fondation.slice): it names every job.
JOBS_CGROUP = "/sys/fs/cgroup/fondation.slice/fondation-jobs.slice"
MAX_TREE_DEPTH = 512  # give(): one file descriptor per level
MAX_REQUEST_BYTES = 1024 * 1024
MAX_ARGS = 4096
CLI_OOM_SCORE_ADJ = 500  # the CLI, not the agent or the host's services, goes first when memory runs out
SYSTEMCTL_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0

_MEMORY = re.compile(r"^(?:[0-9]{1,15}(?:\.[0-9]{1,6})?[KMGT]?|[0-9]{1,3}(?:\.[0-9]{1,6})?%|infinity)$")
_CPU_QUOTA = re.compile(r"^[0-9]{1,6}(?:\.[0-9]{1,3})?%$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")
# Set by the launcher itself; a request may not choose them.
RESERVED_ENV = frozenset({"HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "XDG_RUNTIME_DIR", "NOTIFY_SOCKET",
                           "LD_PRELOAD", "LD_LIBRARY_PATH", "CREDENTIALS_DIRECTORY"})
ACTIVE_STATES = ("active", "activating", "deactivating", "reloading", "refreshing")

# Exit statuses (sysexits.h) the agent reports as host problems.
EX_USAGE, EX_NOPERM, EX_UNAVAILABLE, EX_CONFIG = 64, 77, 69, 78


class LauncherError(Exception):
    def __init__(self, message: str, status: int = EX_USAGE):
        super().__init__(message)
        self.status = status


def worker_tag(worker_id: str) -> str:
    """The worker id as it appears in a unit's Description (no spaces, no control characters)."""
    return _TAG_UNSAFE.sub("_", worker_id)[:200] or "_"


def unit_description(unit: str, worker_id: str) -> str:
    return f"fondation-agent {unit} for worker {worker_tag(worker_id)}"


# ---- validation ----------------------------------------------------------------------------------


def _field(request: Mapping[str, Any], name: str, kind: type) -> Any:
    value = request.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise LauncherError(f"{name}: missing or not a {kind.__name__}")
    return value


def _matching(value: Any, pattern: re.Pattern, name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise LauncherError(f"{name}: refused {value!r}")
    return value


def _count(value: Any, name: str, lowest: int = 1, highest: int = 10**12) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise LauncherError(f"{name}: must be an integer from {lowest} to {highest}")
    return value


def _text(value: Any, name: str, most: int, *, lines: bool = False) -> str:
    """Text with no NUL, over one line only if `lines` (argv and env travel in the job spec: JSON)."""
    if not isinstance(value, str) or "\0" in value or (not lines and "\n" in value) or len(value) > most:
        raise LauncherError(f"{name}: refused (not text, a NUL or newline, or over {most} characters)")
    return value


@dataclass(frozen=True)
class RunRequest:
    unit: str
    description: str
    workspace: Path
    argv: tuple[str, ...]
    env: Mapping[str, str]
    memory_max: str
    cpu_quota: str
    tasks_max: int
    runtime_max_ms: int
    stop_timeout_ms: int

    @property
    def repo(self) -> Path:
        return self.workspace / "repo"

    @property
    def job_spec(self) -> Path:
        return self.workspace / JOB_SPEC


def parse_run(request: Mapping[str, Any], *, workspaces: Path = WORKSPACES, agent_uid: int) -> RunRequest:
    """A `run` request, every field checked; the workspace must be the agent's, in `workspaces`."""
    unit = _matching(request.get("unit"), UNIT_PATTERN, "unit")
    description = _text(request.get("description"), "description", 300)
    if not description.isprintable():
        raise LauncherError("description: refused control characters")
    argv = _field(request, "argv", list)
    if not argv or len(argv) > MAX_ARGS:
        raise LauncherError(f"argv: must hold 1 to {MAX_ARGS} arguments")
    argv = tuple(_text(arg, "argv", MAX_REQUEST_BYTES, lines=True) for arg in argv)
    if not argv[0].startswith("/") and "/" in argv[0]:
        raise LauncherError("argv: the command must be a name on PATH or an absolute path")
    env = _field(request, "env", dict)
    for name, value in env.items():
        _matching(name, _ENV_NAME, "env")
        if name in RESERVED_ENV:
            raise LauncherError(f"env: {name} is set by the launcher")
        _text(value, f"env {name}", 64 * 1024, lines=True)
    limits = _field(request, "limits", dict)
    return RunRequest(
        unit=unit,
        description=description,
        workspace=check_workspace(request.get("workspace"), workspaces=workspaces, agent_uid=agent_uid),
        argv=argv,
        env=dict(env),
        memory_max=_matching(limits.get("memory_max"), _MEMORY, "memory_max"),
        cpu_quota=_matching(limits.get("cpu_quota"), _CPU_QUOTA, "cpu_quota"),
        tasks_max=_count(limits.get("tasks_max"), "tasks_max", 8, 1_000_000),
        runtime_max_ms=_count(limits.get("runtime_max_ms"), "runtime_max_ms"),
        stop_timeout_ms=_count(limits.get("stop_timeout_ms"), "stop_timeout_ms", 1, 3_600_000),
    )


def check_workspace(value: Any, *, workspaces: Path, agent_uid: int, parts: bool = True) -> Path:
    """`workspaces/<jobId>-<attempt>`, a real directory of the agent's (with its WORKSPACE_PARTS, still
    the agent's: a job is about to get them)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise LauncherError("workspace: must be an absolute path")
    path = Path(value)
    if path.parent != workspaces or not WORKSPACE_NAME.fullmatch(path.name):
        raise LauncherError(f"workspace: must be {workspaces}/<jobId>-<attempt>, got {value!r}")
    for entry in (workspaces, path, *(path / part for part in WORKSPACE_PARTS if parts)):
        try:
            info = entry.lstat()
        except OSError as error:
            raise LauncherError(f"workspace: {entry}: {error.strerror}") from None
        if not stat.S_ISDIR(info.st_mode) or (info.st_uid != agent_uid and entry != workspaces):
            raise LauncherError(f"workspace: {entry} is not a directory of the agent's")
    return path


# ---- the job's unit ------------------------------------------------------------------------------


def job_properties(run: RunRequest, user: str) -> list[str]:
    """Everything the job's unit is: the sandbox (fixed here) and the limits (from the request)."""
    home = run.workspace / "home"
    return [
        f"User={user}",
        f"Group={user}",
        f"WorkingDirectory={run.repo}",
        f"Environment=HOME={home} USER={user} LOGNAME={user}",
        "UMask=0007",
        f"OOMScoreAdjust={CLI_OOM_SCORE_ADJ}",
        "LimitCORE=0",
        # Limits: systemd's, on a unit of PID 1 the job cannot reach.
        f"MemoryMax={run.memory_max}",
        "MemorySwapMax=0",
        f"CPUQuota={run.cpu_quota}",
        f"TasksMax={run.tasks_max}",
        f"RuntimeMaxSec={run.runtime_max_ms}ms",
        f"TimeoutStopSec={run.stop_timeout_ms}ms",
        "KillMode=control-group",
        # Files: only its workspace is writable; a fresh /tmp, /var/tmp, /dev (with /dev/shm) and home.
        "ProtectSystem=strict",
        "ProtectHome=yes",
        # /tmp and /var/tmp: the workspace's tmp/, on the job's own file system (disk_max) like the rest.
        f"BindPaths={run.workspace / 'tmp'}:/tmp {run.workspace / 'tmp'}:/var/tmp",
        "PrivateDevices=yes",
        # PrivateDevices= keeps the host's /dev/shm; this one counts against MemoryMax.
        "TemporaryFileSystem=/dev/shm:mode=1777,nosuid,nodev",
        "PrivateIPC=yes",
        f"TemporaryFileSystem={STATE_DIR}",
        f"BindPaths={run.workspace}",
        # No D-Bus (so no systemd manager, no logind), no launcher, no agent configuration, no cron or at
        # spool; no other job's unit file (its command line) or cgroup (the jobs' ids and pids); no journal
        # socket (the CLI's output reaches the journal through the agent, which bounds it).
        f"InaccessiblePaths=-/run/dbus -{SOCKET_PATH} -/etc/fondation-agent -/var/spool -/run/systemd/transient "
        f"-{JOBS_CGROUP} -/run/systemd/journal",
        # Network: a namespace of its own, with only a loopback: no Internet, DNS, host address, other job
        # (abstract UNIX sockets are per namespace too) or inbound connection; its ports are its own. The
        # one way out is the Claude gateway's jobs socket, bound in (job_exec.py's relay serves it on
        # 127.0.0.1:JOB_GATEWAY_PORT); the rest of the gateway's directory (its control socket) is hidden.
        "PrivateNetwork=yes",
        f"TemporaryFileSystem={GATEWAY_RUNTIME_DIR}:mode=0755",
        f"BindPaths={JOBS_SOCKET}",
        # Privileges: none to gain, none to keep.
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "PrivateUsers=yes",
        "RestrictSUIDSGID=yes",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "ProtectProc=invisible",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "DevicePolicy=closed",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        # io_uring: in @system-service, but a kernel attack surface no CLI needs.
        "SystemCallFilter=~io_uring_setup io_uring_enter io_uring_register",
        "SystemCallErrorNumber=EPERM",
        # AF_NETLINK: Node's os.networkInterfaces() (read-only without CAP_NET_ADMIN).
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ]


def systemd_run_command(run: RunRequest, user: str) -> list[str]:
    command = ["systemd-run", "--system", "--pipe", "--wait", "--quiet", "--service-type=exec", f"--unit={run.unit}",
               f"--description={run.description}", f"--slice={SLICE}"]
    for prop in job_properties(run, user):
        command += ["-p", prop]
    # The argv and environment are in the job spec (write_job_spec), not in properties anyone can read.
    return [*command, "--", sys.executable, "-I", "-m", "fondation_agent.sandbox.job_exec", str(run.job_spec)]


def write_job_spec(run: RunRequest, uid: int, gid: int, *, relay_port: int = JOB_GATEWAY_PORT,
                   gateway: str = JOBS_SOCKET) -> None:
    """The job's argv and environment, and where its relay listens and forwards to, readable by its user
    alone (job_exec.py reads them)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run.job_spec)  # an earlier try of the same attempt's
    fd = os.open(run.job_spec, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
    with os.fdopen(fd, "w", encoding="utf-8") as spec:
        os.fchown(fd, uid, gid)
        json.dump({"argv": list(run.argv), "env": dict(run.env), "relay": {"port": relay_port, "socket": gateway}},
                  spec)


# ---- the host: systemd, users, files -------------------------------------------------------------


def host_command(argv: list[str]) -> subprocess.CompletedProcess:
    """A tool of the host (systemctl, mkfs, systemd-mount), its output captured, bounded in time."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=SYSTEMCTL_TIMEOUT_S, check=False)


def host_command_or_refuse(argv: list[str]) -> None:
    done = host_command(argv)
    if done.returncode != 0:
        raise LauncherError(f"{argv[0]}: {(done.stderr or done.stdout).strip()[-300:]}", EX_UNAVAILABLE)


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return host_command(["systemctl", "--system", "--no-pager", *args])


def show_unit(unit: str) -> dict[str, str]:
    done = systemctl("show", "-p", "LoadState", "-p", "ActiveState", "-p", "Result", "-p", "ExecMainCode",
                     "-p", "ExecMainStatus", f"{unit}.service")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def pool_users() -> list[pwd.struct_passwd]:
    """The job users: system accounts fondation-job-<n> (made by the package and the Ansible role)."""
    return sorted((entry for entry in pwd.getpwall() if POOL_USER.fullmatch(entry.pw_name) and entry.pw_uid != 0),
                  key=lambda entry: int(entry.pw_name.rsplit("-", 1)[1]))


def uids_running() -> set[int]:
    """Real uids of every process on the host (the launcher sees all of /proc)."""
    uids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    uids.add(int(line.split()[1]))
                    break
    return uids


@contextlib.contextmanager
def free_pool_user(lock_dir: Path = LOCK_DIR) -> Iterator[pwd.struct_passwd]:
    """A pool user held (flock) for as long as the block runs, with no process running as it."""
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    busy = uids_running()
    for user in pool_users():
        if user.pw_uid in busy:
            continue
        fd = os.open(lock_dir / f"{user.pw_name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            if user.pw_uid not in uids_running():  # a process may have started between the two looks
                yield user
                return
        finally:
            os.close(fd)  # releases the lock
    raise LauncherError("every job user is busy: add users fondation-job-<n> (one per job slot of the host)",
                        EX_UNAVAILABLE)


def give(top: Path, uid: int, gid: int, *, only_from: Callable[[int], bool] = lambda _: True) -> int:
    """chown of a tree, walked by file descriptor (openat, fchown): no symlink is ever followed, and an
    entry swapped for a link after it was listed is changed itself, not what it points to. Files keep
    their mode but lose set-id bits; the owner gets rwx. Returns how many entries changed."""
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return _give_entry(fd, uid, gid, only_from, MAX_TREE_DEPTH)
    finally:
        os.close(fd)


_OPEN_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _give_entry(fd: int, uid: int, gid: int, only_from: Callable[[int], bool], depth: int) -> int:
    info = os.fstat(fd)
    changed = 0
    if only_from(info.st_uid):
        os.fchown(fd, uid, gid)
        owner = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        os.fchmod(fd, (stat.S_IMODE(info.st_mode) | owner) & ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX))
        changed = 1
    if not stat.S_ISDIR(info.st_mode):
        return changed
    if depth == 0:
        raise LauncherError(f"workspace: a tree deeper than {MAX_TREE_DEPTH} levels")
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                child = os.open(entry.name, _OPEN_ENTRY, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError:  # a symlink (ELOOP) or a socket (ENXIO): the entry itself, never its target
                with contextlib.suppress(FileNotFoundError):
                    if only_from(os.stat(entry.name, dir_fd=fd, follow_symlinks=False).st_uid):
                        os.chown(entry.name, uid, gid, dir_fd=fd, follow_symlinks=False)
                        changed += 1
                continue
            try:
                changed += _give_entry(child, uid, gid, only_from, depth - 1)
            finally:
                os.close(child)
    return changed


def hand_back(workspace: Path, agent: pwd.struct_passwd) -> int:
    """Everything the job users own in a workspace becomes the agent's again (to read and delete)."""
    pool = {user.pw_uid for user in pool_users()}
    return give(workspace, agent.pw_uid, agent.pw_gid, only_from=pool.__contains__)


def gateway_listening(path: str = JOBS_SOCKET) -> bool:
    """Whether the gateway's jobs socket is there to bind into a job (its unit would not start without)."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def stop_processes_of(uid: int) -> None:
    """Backstop: the unit's stop killed its cgroup; nothing else may run as a job user afterwards."""
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if any(line.startswith("Uid:") and int(line.split()[1]) == uid for line in status.read_text().splitlines()):
                os.kill(int(status.parent.name), 9)


# ---- the connection ------------------------------------------------------------------------------


class Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    def peer_uid(self) -> int:
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return int.from_bytes(creds[4:8], sys.byteorder)

    def receive(self) -> tuple[dict[str, Any], list[int]]:
        """One JSON line, and whatever file descriptors came with it."""
        data, fds = bytearray(), []
        while not data.endswith(b"\n"):
            chunk, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(8 * 4))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                    fds.extend(received)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST_BYTES:
                raise LauncherError("request too large")
        try:
            request = json.loads(data.decode("utf-8"))
        except ValueError as error:
            raise LauncherError(f"request is not JSON: {error}") from None
        if not isinstance(request, dict):
            raise LauncherError("request must be a JSON object")
        return request, fds

    def send(self, **message: Any) -> None:
        with contextlib.suppress(OSError):  # the agent may be gone (crash, restart): the job still ends well
            self.sock.sendall(json.dumps(message).encode("utf-8") + b"\n")


def _run(connection: Connection, request: Mapping[str, Any], fds: list[int], agent: pwd.struct_passwd) -> None:
    run = parse_run(request, agent_uid=agent.pw_uid)
    if len(fds) != 2 or not all(stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in fds):
        raise LauncherError("run: expects the CLI's stdout and stderr pipes")
    if not gateway_listening():
        raise LauncherError(f"the Claude gateway is not running ({JOBS_SOCKET} is missing; "
                            "systemctl start fondation-agent-gateway)", EX_CONFIG)
    with free_pool_user() as user:
        try:
            for part in WORKSPACE_PARTS:
                give(run.workspace / part, user.pw_uid, user.pw_gid)
            write_job_spec(run, user.pw_uid, user.pw_gid)
            systemctl("reset-failed", f"{run.unit}.service")  # a failed earlier try of the same attempt
            try:
                process = subprocess.Popen(systemd_run_command(run, user.pw_name), stdin=subprocess.DEVNULL,
                                           stdout=fds[0], stderr=fds[1], close_fds=True)
            finally:
                for fd in fds:
                    os.close(fd)  # only the job may hold the agent's pipes: their end is the job's end
            connection.send(event="started", unit=f"{run.unit}.service", user=user.pw_name)
            process.wait()
            state = show_unit(run.unit)
            if state.get("ActiveState") in ACTIVE_STATES:
                systemctl("stop", f"{run.unit}.service")
            if state.get("LoadState") == "loaded":
                systemctl("reset-failed", f"{run.unit}.service")
        finally:  # whatever failed, the workspace goes back to the agent with nothing of the job running
            stop_processes_of(user.pw_uid)
            handed_back = hand_back(run.workspace, agent)
    connection.send(event="finished", **finished_report(state, process.returncode), handed_back=handed_back)


def finished_report(state: Mapping[str, str], run_status: int) -> dict[str, Any]:
    """How the job ended. A unit that succeeded is gone (collected); a failed one stays until reset."""
    if state.get("LoadState") != "loaded":
        return {"result": "success" if run_status == 0 else "exit-code", "exit_code": run_status}
    code, status = state.get("ExecMainCode", ""), state.get("ExecMainStatus", "")
    number = int(status) if status.lstrip("-").isdigit() else run_status
    exit_code = -number if code in ("2", "3") else number  # CLD_KILLED, CLD_DUMPED: a signal
    return {"result": state.get("Result", ""), "exit_code": exit_code}


def disk_image(worker: str, workspace: Path) -> Path:
    return DISKS / worker_tag(worker) / f"{workspace.name}.img"


def _disk_of(request: Mapping[str, Any], agent: pwd.struct_passwd) -> tuple[Path, Path]:
    """The (image, workspace) a `disk` or `release` request names, both checked."""
    workspace = check_workspace(request.get("workspace"), workspaces=WORKSPACES, agent_uid=agent.pw_uid, parts=False)
    return disk_image(_text(request.get("worker"), "worker", 300), workspace), workspace


def _disk(connection: Connection, request: Mapping[str, Any], agent: pwd.struct_passwd) -> None:
    image, workspace = _disk_of(request, agent)
    size = _count(request.get("disk_max_bytes"), "disk_max_bytes", MIN_DISK_BYTES, MAX_DISK_BYTES)
    if os.path.ismount(workspace) or any(os.scandir(workspace)):
        raise LauncherError(f"workspace: {workspace} must be a new, empty directory")
    image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)  # reserved now: the host has the room, or the job goes elsewhere
    except OSError as error:
        os.unlink(image)
        raise LauncherError(f"cannot reserve disk_max ({size} bytes) for a job: {error.strerror}",
                            EX_UNAVAILABLE) from None
    finally:
        os.close(fd)
    try:
        host_command_or_refuse(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
                       "-E", f"nodiscard,root_owner={agent.pw_uid}:{agent.pw_gid}", str(image)])
        host_command_or_refuse(["systemd-mount", "--quiet", "--collect", "--type=ext4", "--options=nosuid,nodev",
                       str(image), str(workspace)])
    except LauncherError:
        release_disk(image, workspace)
        raise
    os.chmod(workspace, 0o711)  # noqa: S103 (as Workspace.create: job users pass through, list nothing)
    connection.send(ok=True)


def release_disk(image: Path, workspace: Path) -> None:
    """Unmounts a workspace's file system (whatever still holds it: lazily) and deletes its image."""
    if os.path.ismount(workspace):
        host_command_or_refuse(["systemd-umount", "--quiet", str(workspace)])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(image)


def _release(connection: Connection, request: Mapping[str, Any], agent: pwd.struct_passwd) -> None:
    release_disk(*_disk_of(request, agent))
    connection.send(ok=True)


def _stop(connection: Connection, request: Mapping[str, Any]) -> None:
    unit = _matching(request.get("unit"), UNIT_PATTERN, "unit")
    done = systemctl("stop", f"{unit}.service")
    connection.send(ok=done.returncode in (0, 5))  # 5: not loaded (already gone)


def job_units() -> list[tuple[str, str, str]]:
    """(unit, active state, description) of every fondation-job-* service PID 1 knows."""
    done = systemctl("list-units", "--all", "--plain", "--no-legend", "--full", "fondation-job-*.service")
    units = []
    for raw in done.stdout.splitlines():
        fields = raw.strip().lstrip("●*").split(None, 4)
        if len(fields) >= 4 and UNIT_PATTERN.fullmatch(fields[0].removesuffix(".service")):
            units.append((fields[0], fields[2], fields[4] if len(fields) > 4 else ""))
    return units


def _leftovers(connection: Connection, request: Mapping[str, Any], agent: pwd.struct_passwd) -> None:
    tag = worker_tag(_text(request.get("worker"), "worker", 300))
    ours = [(unit, state) for unit, state, description in job_units() if description.endswith(f" for worker {tag}")]
    running = [unit for unit, state in ours if state in ACTIVE_STATES]
    if running:
        systemctl("stop", *running)
    if ours:
        systemctl("reset-failed", *(unit for unit, _ in ours))
    freed = []
    with contextlib.suppress(OSError):
        for entry in sorted(WORKSPACES.iterdir()):
            with contextlib.suppress(OSError, LauncherError):
                check_workspace(str(entry), workspaces=WORKSPACES, agent_uid=agent.pw_uid, parts=False)
                if worker_tag((entry / OWNER_FILE).read_text(encoding="utf-8").strip()) == tag:
                    hand_back(entry, agent)
                    freed.append(entry.name)
    # The worker's job file systems: whatever their workspace held is an earlier run's, gone with them.
    with contextlib.suppress(OSError):
        for image in sorted((DISKS / tag).glob("*.img")):
            with contextlib.suppress(OSError, LauncherError):
                workspace = WORKSPACES / image.name.removesuffix(".img")
                release_disk(image, workspace)
                with contextlib.suppress(FileNotFoundError):
                    workspace.rmdir()
    connection.send(units=[unit for unit, _ in ours], workspaces=freed)


def serve(sock: socket.socket, agent_user: str = AGENT_USER) -> int:
    connection = Connection(sock)
    try:
        agent = pwd.getpwnam(agent_user)
        if connection.peer_uid() != agent.pw_uid:
            raise LauncherError(f"only {agent_user} may start jobs", EX_NOPERM)
        sock.settimeout(REQUEST_TIMEOUT_S)  # the request comes at once; the job's end may take hours
        request, fds = connection.receive()
        sock.settimeout(None)
        operation = request.get("op")
        if operation != "run":
            for fd in fds:
                os.close(fd)
        if operation == "run":
            _run(connection, request, fds, agent)
        elif operation == "stop":
            _stop(connection, request)
        elif operation == "leftovers":
            _leftovers(connection, request, agent)
        elif operation == "disk":
            _disk(connection, request, agent)
        elif operation == "release":
            _release(connection, request, agent)
        else:
            raise LauncherError(f"unknown op {operation!r}")
    except (LauncherError, OSError, subprocess.SubprocessError, KeyError) as error:
        status = error.status if isinstance(error, LauncherError) else EX_UNAVAILABLE
        print(f"fondation-jobs-launcher: refused: {error}", file=sys.stderr, flush=True)
        connection.send(error=f"fondation-jobs-launcher: {error}", status=status)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(serve(socket.socket(fileno=0)))
