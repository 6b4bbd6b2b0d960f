"""The production runner (sandbox = "systemd-scope"): each job in a transient systemd scope of the job user.

How a job is started (agent side, user `fondation`):

    sudo -n -u fondation-job -- /usr/libexec/fondation-agent/job-helper run --unit fondation-job-<jobId>-<attempt>
         --description … --memory-max … --cpu-quota … --tasks-max … --runtime-max-ms … --stop-timeout-ms … -- <cli argv>

with the job's environment written as JSON on the helper's stdin (never on a command line, which
every local user can read in /proc). The helper is this module (`python3 -I -m fondation_agent.scope`),
started by a root-owned wrapper, the only command sudoers lets `fondation` run as `fondation-job`.
As the job user it then:

1. reads the environment, points stdin at /dev/null, sets HOME/USER/LOGNAME to the job user's own
   and adds the job user's credentials file (`~/.config/fondation-agent/job.env`, mode 0600: e.g.
   the Anthropic API key; the agent never reads it — it cannot: the home is 0700);
2. execs `systemd-run --user --scope --unit=… -p MemoryMax=… -p MemorySwapMax=0 -p CPUQuota=…
   -p TasksMax=… -p RuntimeMaxSec=… -p TimeoutStopSec=<kill_grace>` against the job user's lingering
   user manager (`XDG_RUNTIME_DIR=/run/user/<uid>`), so the process moves into the new scope's cgroup;
3. inside the scope, a small keeper (`… scope keep`) sets umask 0007, starts the CLI with exactly that
   environment (and a raised oom_score_adj), waits for it, reads the scope's own `memory.events`
   before the scope can vanish, reports OOM kills on stderr (one marker line) and ends the way the
   CLI ended (same exit status, or the same signal), which sudo passes back to the agent.

stdout and stderr are the agent's pipes all the way down. Stopping (`stop()`, the local safety
deadline) is `systemctl --user stop <unit>.scope` as the job user: SIGTERM to the whole scope, SIGKILL
after kill_grace (TimeoutStopSec), so the whole tree dies whatever it forked. The timeout itself is
systemd's RuntimeMaxSec. After the CLI ends, `finish` reads the scope's `Result` (`timeout`,
`oom-kill`, …), stops whatever the CLI left running in it, resets the failed unit and hands the
workspace back to the agent (see below); `cleanup_leftovers()` does the same for every scope an earlier
run of this worker left (the unit's Description names the worker).

Permissions: temp_dir is `fondation:fondation-job` 2750 (setgid: everything created below gets the
group `fondation-job`); each workspace is 2770, the agent runs with umask 0007 (so the clone is
group-writable) and so does the CLI (so its output is group-readable); the agent is a member of group
`fondation-job`. Whatever modes the CLI set, `finish` (as the job user, once the scope is gone) makes
every file it owns group-readable and -writable again, so the agent can always read the results and
delete the workspace. The job user is in no group of the agent's, cannot read /etc/fondation-agent or
the service's credentials, and sudoers has no rule for it.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import pwd
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fondation_agent.sandbox import Limits, Outcome, StderrTail, classify, pipe_lines

# The root-owned wrapper that sudoers allows (packaging/debian/job-helper): it execs this module.
HELPER = ("/usr/libexec/fondation-agent/job-helper",)
UNIT_PATTERN = re.compile(r"^fondation-job-[A-Za-z0-9_]{1,64}-[0-9]{1,9}$")
UNIT_GLOB = "fondation-job-*"
CREDENTIALS_FILE = ".config/fondation-agent/job.env"
OWNER_FILE = ".fondation-owner"  # the workspace marker (workspace.OWNER_FILE)
OOM_MARKER = "fondation-agent-scope: oom_kill="
ENV_VARIABLE = "FONDATION_AGENT_JOB_ENV"  # how the job's environment crosses systemd-run (not argv)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_ENV_BYTES = 1024 * 1024
CLI_OOM_SCORE_ADJ = 500  # the CLI, not the agent or the host's services, goes first when memory runs out
# After RuntimeMaxSec (plus the stop's kill_grace) systemd has stopped the scope; this is only a backstop.
SAFETY_MARGIN_S = 30.0
MANAGER_WAIT_RUN_S = 10.0
MANAGER_WAIT_STARTUP_S = 30.0
HELPER_TIMEOUT_S = 60.0

# Helper exit statuses (sysexits.h), so the agent can tell a broken host from a transient hiccup.
EX_USAGE, EX_DATAERR, EX_SOFTWARE, EX_TEMPFAIL, EX_CONFIG = 64, 65, 70, 75, 78

_MEMORY = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?[KMGT]?|[0-9]+(?:\.[0-9]+)?%|infinity)$")
_CPU_QUOTA = re.compile(r"^[0-9]+(?:\.[0-9]+)?%$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")
ACTIVE_STATES = ("active", "activating", "deactivating", "reloading", "refreshing")


def worker_tag(worker_id: str) -> str:
    """The worker id as it appears in a unit's Description (no spaces, no control characters)."""
    return _TAG_UNSAFE.sub("_", worker_id)[:200] or "_"


def unit_description(unit: str, worker_id: str) -> str:
    return f"fondation-agent {unit} for worker {worker_tag(worker_id)}"


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


# ==================================================================================================
# Agent side


class ScopeCli:
    """One CLI run in a scope; the same interface as sandbox.ProcessCli."""

    def __init__(self, runner: SystemdScopeRunner, argv: list[str], *, env: Mapping[str, str], cwd: Path,
                 unit: str, limits: Limits):
        if not UNIT_PATTERN.match(unit):
            raise ValueError(f"unit name {unit!r} is not fondation-job-<jobId>-<attempt>")
        self.runner = runner
        self.unit = unit
        self.limits = limits
        self.workspace = _workspace_root(cwd)
        self._deadline = time.monotonic() + limits.timeout + limits.kill_grace + SAFETY_MARGIN_S
        self._stopped = False
        self._timed_out = False
        self._stop_thread: threading.Thread | None = None
        command = runner.helper_command(
            "run",
            "--unit", unit,
            "--description", unit_description(unit, runner.worker_id),
            "--memory-max", limits.memory_max,
            "--cpu-quota", limits.cpu_quota,
            "--tasks-max", str(limits.tasks_max),
            "--runtime-max-ms", _milliseconds(limits.timeout),
            "--stop-timeout-ms", _milliseconds(limits.kill_grace),
            "--",
            *argv,
        )
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=runner.sudo_environment(),
            start_new_session=True,
        )
        self._stderr = StderrTail(self._process.stderr)
        self._stderr.start()
        try:  # small (the allowlist), so it fits the pipe; a helper that died early just misses it
            self._process.stdin.write(json.dumps(dict(env)).encode("utf-8"))
        except (BrokenPipeError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self._process.stdin.close()

    @property
    def pid(self) -> int:
        """sudo's pid (the CLI itself runs as the job user, in the scope)."""
        return self._process.pid

    def stdout_lines(self) -> Iterator[str]:
        return pipe_lines(self._process.stdout)

    def stop(self) -> None:
        """Stops the scope (the whole tree) without blocking the caller; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_thread = threading.Thread(target=self._stop_until_gone, daemon=True, name=f"stop-{self.unit}")
        self._stop_thread.start()

    def wait(self) -> Outcome:
        try:
            self._process.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._timed_out = True  # systemd's RuntimeMaxSec should have fired long ago
            self.runner.log.warning("scope outlived its RuntimeMaxSec; stopping it", unit=self.unit)
            self._stop_until_gone()
            self._process.wait()
        # First stop whatever the CLI left in its scope: such processes may hold our pipes open.
        report = self.runner.finish(self.unit, self.workspace, self.limits)
        self._stderr.join(timeout=5)
        self._process.stdout.close()
        tail, oom_kills = split_oom_marker(self._stderr.text())
        code = self._process.returncode
        systemd_result = report.get("result", "")
        result = classify(
            code,
            stopped=self._stopped,
            timed_out=self._timed_out or systemd_result == "timeout",
            oom_killed=systemd_result == "oom-kill" or oom_kills > 0,
        )
        return Outcome(result, code, tail)

    def _stop_until_gone(self) -> None:
        """`systemctl --user stop`, repeated while sudo lives (the scope may not have existed yet)."""
        for _ in range(20):
            if self._process.poll() is not None:
                return
            self.runner.stop_unit(self.unit, self.limits)
            try:
                self._process.wait(timeout=self.limits.kill_grace + 5)
                return
            except subprocess.TimeoutExpired:
                pass
            # Before the scope existed sudo relays SIGTERM to the helper; usually not ours to signal.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._process.send_signal(signal.SIGTERM)
        self.runner.log.error("job scope would not stop", unit=self.unit)


class SystemdScopeRunner:
    name = "systemd-scope"

    def __init__(self, config: Any, *, helper: list[str] | tuple[str, ...] | None = None, sudo: str = "sudo"):
        from fondation_agent.config import ConfigError
        from fondation_agent.logs import get_logger

        self.log = get_logger()
        self.job_user = config.job_user
        self.worker_id = config.worker_id
        self.temp_dir = Path(config.temp_dir)
        self.helper = tuple(helper or HELPER)
        self.sudo = sudo
        try:
            job = pwd.getpwnam(self.job_user)
        except KeyError:
            raise ConfigError([f"job_user: no user {self.job_user!r} on this host (sandbox = systemd-scope)"]) from None
        self.job_gid = job.pw_gid
        if os.geteuid() == job.pw_uid:
            raise ConfigError([f"job_user: the agent must not run as the job user {self.job_user!r}"])
        if os.geteuid() != 0 and self.job_gid not in os.getgroups():
            group = grp.getgrgid(self.job_gid).gr_name
            raise ConfigError([
                f"sandbox: the agent's user is not in group {group!r}, so it could not read the jobs' results "
                f"(the unit sets SupplementaryGroups={group}; or adduser fondation {group})"
            ])
        # Files the agent creates for a job (the workspace, the clone) must be group-writable.
        os.umask(0o007)
        self._prepare_temp_dir(ConfigError)
        # Now, not only in cleanup_leftovers(): the worker removes leftover workspaces before calling
        # it, and those hold files of the job user that only its hand-back makes removable.
        self._stopped_at_start: list[str] | None = self._stop_leftovers()

    # ---- the interface ------------------------------------------------------------------------------

    def cleanup_leftovers(self) -> list[str]:
        """Stops and resets every scope an earlier run of this worker left, and frees its workspaces."""
        from fondation_agent.workspace import remove_leftover_workspaces

        if self._stopped_at_start is not None:  # the first call: done a moment ago by __init__
            units, self._stopped_at_start = self._stopped_at_start, None
        else:
            units = self._stop_leftovers()
        remove_leftover_workspaces(self.temp_dir, self.worker_id)  # those the helper handed back
        return units

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, unit: str, limits: Limits) -> ScopeCli:
        return ScopeCli(self, argv, env=env, cwd=cwd, unit=unit, limits=limits)

    # ---- plumbing (also used by ScopeCli) ---------------------------------------------------------

    def _stop_leftovers(self) -> list[str]:
        from fondation_agent.config import ConfigError

        done = self._run_helper(
            "leftovers", "--worker", worker_tag(self.worker_id), "--temp-dir", str(self.temp_dir),
            "--wait", f"{MANAGER_WAIT_STARTUP_S:g}",
            timeout=MANAGER_WAIT_STARTUP_S + HELPER_TIMEOUT_S,
        )
        if done.returncode != 0:
            message = _last_line(done.stderr) or f"exit status {done.returncode}"
            problem = f"sandbox: cannot manage jobs as {self.job_user!r} ({' '.join(self.helper_command())}): {message}"
            if done.returncode == EX_TEMPFAIL:
                raise RuntimeError(problem)  # the user manager is not up (yet): worth a restart
            raise ConfigError([problem])
        return [str(unit) for unit in _json_field(done.stdout, "units", [])]

    def helper_command(self, *args: str) -> list[str]:
        return [self.sudo, "-n", "-u", self.job_user, "--", *self.helper, *args]

    def sudo_environment(self) -> dict[str, str]:
        """sudo resets the environment anyway; it is never handed the agent's to begin with."""
        return {"PATH": os.environ.get("PATH", SAFE_PATH), "LANG": "C.UTF-8"}

    def stop_unit(self, unit: str, limits: Limits) -> None:
        done = self._run_helper("stop", "--unit", unit, timeout=limits.kill_grace + HELPER_TIMEOUT_S)
        if done.returncode != 0:
            self.log.warning("could not stop job scope", unit=unit, error=_last_line(done.stderr))

    def finish(self, unit: str, workspace: Path | None, limits: Limits) -> dict[str, Any]:
        args = ["finish", "--unit", unit]
        if workspace is not None:
            args += ["--workspace", str(workspace)]
        done = self._run_helper(*args, timeout=limits.kill_grace + HELPER_TIMEOUT_S)
        if done.returncode != 0:
            self.log.warning("could not read the job scope's result", unit=unit, error=_last_line(done.stderr))
            return {}
        try:
            report = json.loads(done.stdout)
        except ValueError:
            return {}
        if report.get("leftovers"):
            self.log.warning("the CLI left processes behind; they were stopped with its scope", unit=unit)
        return report if isinstance(report, dict) else {}

    def _run_helper(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                self.helper_command(*args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.sudo_environment(),
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            return subprocess.CompletedProcess(expired.cmd, EX_TEMPFAIL, "", f"no answer within {timeout:g} s")
        except OSError as error:
            return subprocess.CompletedProcess(args, EX_CONFIG, "", f"cannot run {self.sudo}: {error.strerror}")

    def _prepare_temp_dir(self, config_error: type[Exception]) -> None:
        """temp_dir: ours, group = the job user's group, 2750 (the job may enter, not create)."""
        path = self.temp_dir
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o750)
            info = path.stat()
            if info.st_uid == os.geteuid():
                if info.st_gid != self.job_gid:
                    os.chown(path, -1, self.job_gid)
                if stat.S_IMODE(info.st_mode) != 0o2750:
                    os.chmod(path, 0o2750)  # noqa: S103 (group = the job user's: it must enter)
            elif info.st_gid != self.job_gid or not info.st_mode & stat.S_ISGID:
                raise config_error([f"temp_dir: {path} must belong to the agent's user, or be setgid "
                                    f"group {self.job_gid} (the job user's group)"])
        except OSError as error:
            raise config_error([f"temp_dir: cannot prepare {path} for jobs: {error.strerror}"]) from error


def _workspace_root(cwd: Path) -> Path | None:
    """The workspace holding the CLI's working directory (job.py runs it in <workspace>/repo)."""
    for candidate in (cwd, cwd.parent):
        if (candidate / OWNER_FILE).is_file():
            return candidate
    return None


def split_oom_marker(stderr_tail: str) -> tuple[str, int]:
    """Removes the keeper's marker line(s) from the tail; returns the rest and the OOM kill count."""
    kills = 0
    kept = []
    for line in stderr_tail.splitlines():
        if line.startswith(OOM_MARKER):
            with contextlib.suppress(ValueError):
                kills = max(kills, int(line[len(OOM_MARKER):].split()[0]))
            continue
        kept.append(line)
    return "\n".join(kept).strip(), kills


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _json_field(text: str, key: str, default: Any) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value.get(key, default) if isinstance(value, dict) else default


# ==================================================================================================
# Job-user side: `python3 -I -m fondation_agent.scope COMMAND` (run by sudo as the job user, or in the scope)


class HelperError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _check_unit(unit: str) -> str:
    if not UNIT_PATTERN.match(unit):
        raise HelperError(f"refusing unit name {unit!r}: not fondation-job-<jobId>-<attempt>", EX_USAGE)
    return unit


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise HelperError(f"refusing {what} {value!r}", EX_USAGE)
    return value


def _positive_int(value: str, what: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise HelperError(f"refusing {what} {value!r}: not a positive whole number", EX_USAGE)
    return int(value)


def _runtime_dir() -> str:
    """The job user's XDG_RUNTIME_DIR (sudo resets the environment: normally /run/user/<uid>)."""
    configured = os.environ.get("XDG_RUNTIME_DIR", "")
    return configured if configured.startswith("/") else f"/run/user/{os.getuid()}"


def _manager_environment(wait_s: float) -> dict[str, str]:
    """The environment for systemd-run/systemctl --user; waits for the lingering user manager."""
    runtime = _runtime_dir()
    socket_path = os.path.join(runtime, "systemd", "private")
    deadline = time.monotonic() + wait_s
    while not os.path.exists(socket_path):
        if time.monotonic() >= deadline:
            user = pwd.getpwuid(os.getuid()).pw_name
            raise HelperError(
                f"the user manager of {user!r} is not running ({socket_path} is missing): "
                f"run `loginctl enable-linger {user}`",
                EX_TEMPFAIL,
            )
        time.sleep(0.2)
    environment = {
        "PATH": os.environ.get("PATH", SAFE_PATH),
        "LANG": "C.UTF-8",
        "XDG_RUNTIME_DIR": runtime,
        "SYSTEMD_PAGER": "",
        "SYSTEMD_COLORS": "0",
    }
    bus = os.path.join(runtime, "bus")
    if os.path.exists(bus):
        environment["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={bus}"
    return environment


def _systemctl(environment: Mapping[str, str], *args: str, timeout: float = HELPER_TIMEOUT_S
               ) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", "--user", "--no-pager", *args], env=dict(environment),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)


def _show(environment: Mapping[str, str], unit: str) -> dict[str, str]:
    done = _systemctl(environment, "show", "-p", "LoadState", "-p", "ActiveState", "-p", "Result", f"{unit}.scope")
    properties = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        properties[key.strip()] = value.strip()
    return properties


def read_credentials_file(home: str) -> dict[str, str]:
    """~/.config/fondation-agent/job.env: KEY=VALUE lines for the CLI (API keys), owner-only."""
    path = os.path.join(home, CREDENTIALS_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise HelperError(f"cannot read {path}: {error.strerror}", EX_CONFIG) from error
    with os.fdopen(fd, encoding="utf-8") as handle:
        info = os.fstat(handle.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
            raise HelperError(f"{path} must be a file owned by the job user with mode 0600", EX_CONFIG)
        text = handle.read()
    variables = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            raise HelperError(f"{path}:{number}: expected NAME=value", EX_CONFIG)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        variables[name] = value
    return variables


def _read_environment(stream) -> dict[str, str]:
    raw = stream.read(MAX_ENV_BYTES + 1)
    if len(raw) > MAX_ENV_BYTES:
        raise HelperError("the job environment is too large", EX_DATAERR)
    try:
        environment = json.loads(raw.decode("utf-8") or "{}")
    except ValueError as error:
        raise HelperError(f"the job environment is not JSON: {error}", EX_DATAERR) from error
    if not isinstance(environment, dict) or not all(
        isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) and "\0" not in v
        for k, v in environment.items()
    ):
        raise HelperError("the job environment must map variable names to strings", EX_DATAERR)
    return environment


def _stdin_to_devnull() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    if null != 0:
        os.close(null)


def _cmd_run(args: argparse.Namespace) -> int:
    unit = _check_unit(args.unit)
    description = args.description
    if not description.isprintable() or len(description) > 300:
        raise HelperError("refusing a description with control characters or over 300 characters", EX_USAGE)
    properties = [
        f"MemoryMax={_check(args.memory_max, _MEMORY, 'MemoryMax')}",
        "MemorySwapMax=0",
        f"CPUQuota={_check(args.cpu_quota, _CPU_QUOTA, 'CPUQuota')}",
        f"TasksMax={_positive_int(args.tasks_max, 'TasksMax')}",
        f"RuntimeMaxSec={_positive_int(args.runtime_max_ms, 'the runtime limit')}ms",
        f"TimeoutStopSec={_positive_int(args.stop_timeout_ms, 'the stop timeout')}ms",
    ]
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise HelperError("no command given after --", EX_USAGE)
    environment = _read_environment(sys.stdin.buffer)
    _stdin_to_devnull()  # the CLI gets no stdin, as with the process runner
    account = pwd.getpwuid(os.getuid())
    environment.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    environment.update(read_credentials_file(account.pw_dir))
    manager = _manager_environment(MANAGER_WAIT_RUN_S)
    # A failed scope of the same name (an earlier try of this attempt) would block the name.
    _systemctl(manager, "reset-failed", f"{unit}.scope")
    command = [
        "systemd-run", "--user", "--scope", "--quiet", f"--unit={unit}", f"--description={description}",
        *(item for prop in properties for item in ("-p", prop)),
        "--", sys.executable, "-I", "-m", "fondation_agent.scope", "keep", "--", *argv,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("systemd-run", command, {**manager, ENV_VARIABLE: json.dumps(environment)})  # noqa: S606
    return EX_SOFTWARE  # not reached


def _noop_handler(signum: int, frame: Any) -> None:
    """Stop signals reach the whole scope: the keeper outlives the CLI to report how it ended."""


def _raise_oom_score() -> None:
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "r+") as handle:
        current = int(handle.read().strip() or 0)
        if current < CLI_OOM_SCORE_ADJ:
            handle.seek(0)
            handle.write(str(CLI_OOM_SCORE_ADJ))


def scope_oom_kills(proc_cgroup: str = "/proc/self/cgroup", cgroup_root: str = "/sys/fs/cgroup") -> int:
    """oom_kill from memory.events of this process's cgroup (v2), 0 when unknown."""
    try:
        with open(proc_cgroup, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    paths = [line[3:] for line in lines if line.startswith("0::")]
    if not paths:
        return 0
    try:
        with open(os.path.join(cgroup_root, paths[0].lstrip("/"), "memory.events"), encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return 0
    return 0


def _cmd_keep(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    environment = json.loads(os.environ.get(ENV_VARIABLE) or "{}")
    os.umask(0o007)
    _stdin_to_devnull()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _noop_handler)  # a handler (unlike SIG_IGN) is reset in the CLI at exec
    try:
        child = subprocess.Popen(argv, env=environment, preexec_fn=_raise_oom_score)  # the keeper has one thread
    except OSError as error:
        print(f"fondation-agent: cannot start {argv[0]!r}: {error.strerror}", file=sys.stderr, flush=True)
        return 127
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            continue
    kills = scope_oom_kills()
    if kills:
        print(f"{OOM_MARKER}{kills} (the scope hit MemoryMax)", file=sys.stderr, flush=True)
    if code < 0:  # end the same way, so sudo and the agent see the signal
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dump of the keeper for the CLI's SIGSEGV
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _cmd_stop(args: argparse.Namespace) -> int:
    unit = _check_unit(args.unit)
    manager = _manager_environment(2.0)
    done = _systemctl(manager, "stop", f"{unit}.scope")
    if done.returncode not in (0, 5):  # 5: not loaded (already gone)
        print(_last_line(done.stderr), file=sys.stderr)
    return 0


def _cmd_finish(args: argparse.Namespace) -> int:
    unit = _check_unit(args.unit)
    manager = _manager_environment(2.0)
    before = _show(manager, unit)  # before our own stop, which could turn into a Result of its own
    leftovers = before.get("ActiveState") in ACTIVE_STATES
    if leftovers:
        _systemctl(manager, "stop", f"{unit}.scope")
    if before.get("LoadState") == "loaded":
        _systemctl(manager, "reset-failed", f"{unit}.scope")
    handed_back = hand_back(Path(args.workspace)) if args.workspace else 0
    report = {
        "unit": f"{unit}.scope",
        "result": before.get("Result", ""),
        "active_state": before.get("ActiveState", ""),
        "load_state": before.get("LoadState", ""),
        "leftovers": leftovers,
        "handed_back": handed_back,
    }
    print(json.dumps(report))
    return 0


def _list_job_units(manager: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(unit, active state, description) of every fondation-job-* unit the user manager knows."""
    done = _systemctl(manager, "list-units", "--all", "--plain", "--no-legend", "--full", UNIT_GLOB)
    units = []
    for raw in done.stdout.splitlines():
        fields = raw.strip().lstrip("●*").split(None, 4)
        if len(fields) >= 4 and fields[0].startswith("fondation-job-"):
            units.append((fields[0], fields[2], fields[4] if len(fields) > 4 else ""))
    return units


def _cmd_leftovers(args: argparse.Namespace) -> int:
    suffix = f" for worker {worker_tag(args.worker)}"
    manager = _manager_environment(float(args.wait))
    ours = [
        (unit, state) for unit, state, description in _list_job_units(manager)
        if unit.endswith(".scope") and UNIT_PATTERN.match(unit[: -len(".scope")]) and description.endswith(suffix)
    ]
    running = [unit for unit, state in ours if state in ACTIVE_STATES]
    if running:
        _systemctl(manager, "stop", *running)
    if ours:
        _systemctl(manager, "reset-failed", *(unit for unit, _ in ours))
    freed = []
    if args.temp_dir:
        for workspace in _workspaces_of(Path(args.temp_dir), args.worker):
            hand_back(workspace)
            freed.append(workspace.name)
    print(json.dumps({"units": [unit for unit, _ in ours], "workspaces": freed}))
    return 0


def _workspaces_of(temp_dir: Path, worker: str) -> list[Path]:
    found = []
    with contextlib.suppress(OSError):
        for entry in temp_dir.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    owner = (entry / OWNER_FILE).read_text(encoding="utf-8").strip()
                    if worker_tag(owner) == worker:
                        found.append(entry)
    return found


def hand_back(workspace: Path) -> int:
    """Makes everything the job user owns in a workspace group-readable and -writable (for the agent).

    Only a real workspace (a directory with the owner marker, not a symlink) is touched, and only what
    this user owns; symlinks are left alone (the agent never follows them). Returns how many entries changed.
    """
    try:
        info = workspace.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(info.st_mode) or not (workspace / OWNER_FILE).is_file():
        raise HelperError(f"refusing to hand back {workspace}: not a workspace", EX_USAGE)
    uid = os.getuid()
    changed = 0

    def fix(path: str) -> None:
        nonlocal changed
        try:
            entry = os.lstat(path)
        except OSError:
            return
        if entry.st_uid != uid or stat.S_ISLNK(entry.st_mode):
            return
        mode = stat.S_IMODE(entry.st_mode)
        # Directories: rwx for owner and group, no sticky bit; files: rw, and x where the owner has it.
        group_x = 0o010 if mode & 0o100 else 0
        wanted = (mode | 0o770) & ~stat.S_ISVTX if stat.S_ISDIR(entry.st_mode) else mode | 0o660 | group_x
        if wanted != mode:
            with contextlib.suppress(OSError):
                os.chmod(path, wanted)
                changed += 1

    fix(str(workspace))
    for directory, subdirectories, files in os.walk(workspace, topdown=True, followlinks=False):
        for name in subdirectories:  # before os.walk lists them
            fix(os.path.join(directory, name))
        for name in files:
            fix(os.path.join(directory, name))
    return changed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="job-helper", description="fondation-agent's job-user side (see scope.py)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start a CLI in a new scope (job environment as JSON on stdin)")
    run.add_argument("--unit", required=True)
    run.add_argument("--description", required=True)
    run.add_argument("--memory-max", required=True)
    run.add_argument("--cpu-quota", required=True)
    run.add_argument("--tasks-max", required=True)
    run.add_argument("--runtime-max-ms", required=True)
    run.add_argument("--stop-timeout-ms", required=True)
    run.add_argument("argv", nargs=argparse.REMAINDER)
    keep = commands.add_parser("keep", help="(inside the scope) run the CLI and report how it ended")
    keep.add_argument("argv", nargs=argparse.REMAINDER)
    stop = commands.add_parser("stop", help="stop a job's scope (SIGTERM, SIGKILL after TimeoutStopSec)")
    stop.add_argument("--unit", required=True)
    finish = commands.add_parser("finish", help="read a scope's Result, stop what is left, hand the workspace back")
    finish.add_argument("--unit", required=True)
    finish.add_argument("--workspace", default="")
    leftovers = commands.add_parser("leftovers", help="stop and reset the scopes an earlier run of a worker left")
    leftovers.add_argument("--worker", required=True)
    leftovers.add_argument("--temp-dir", default="")
    leftovers.add_argument("--wait", default="0")
    return parser


_COMMANDS = {"run": _cmd_run, "keep": _cmd_keep, "stop": _cmd_stop, "finish": _cmd_finish, "leftovers": _cmd_leftovers}


def helper_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except HelperError as error:
        print(f"fondation-agent job-helper: {error}", file=sys.stderr, flush=True)
        return error.status
    except subprocess.TimeoutExpired as expired:
        print(f"fondation-agent job-helper: {expired.cmd[0]} did not answer in time", file=sys.stderr, flush=True)
        return EX_TEMPFAIL
    except FileNotFoundError as error:
        print(f"fondation-agent job-helper: {error.filename}: not found", file=sys.stderr, flush=True)
        return EX_CONFIG


if __name__ == "__main__":
    sys.exit(helper_main())
