"""Validate and clone an untrusted repository.

Job rows come from a shared database, so the repository URL and branch are hostile input.
`check_repository` refuses anything but plain `https://ALLOWED_HOST/path` (or, for demos and tests,
an existing local directory) before any process is spawned. `clone_repository` then runs a shallow,
single-branch `git clone` through GitPython with a wall-clock timeout, an on-disk size limit and a
cancel hook, and classifies failures as permanent or retryable for the job runner.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import git

from fondation_agent.job.untrusted import clean_text
from fondation_agent.queue.rules import MAX_URL_LENGTH, ErrorKind

MAX_BRANCH_LENGTH = 200
POLL_INTERVAL = 0.25
# A small pack can expand to a huge tree of tiny files: the clone is limited in files as well as bytes.
DEFAULT_MAX_FILES = 100_000
# git runs under an address-space limit (prlimit), with pack windows and caches that fit in it, so a
# hostile repository makes git fail rather than the agent (whose unit has MemoryMax=) run out of memory.
GIT_ADDRESS_SPACE = 1536 * 1024**2
GIT_MEMORY_CONFIG = ("core.packedGitLimit=256m", "core.packedGitWindowSize=32m", "core.deltaBaseCacheLimit=64m",
                     "pack.windowMemory=128m", "pack.threads=1")
STDERR_KEEP_BYTES = 64 * 1024
MESSAGE_MAX_CHARS = 300

# Environment variables the agent may hand to git. Everything else (the agent's own settings, any
# secret) is removed. Proxy and CA variables are kept so hosts behind a proxy still work.
PASSTHROUGH_ENV = (
    "PATH",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


class RepositoryRefused(Exception):
    """Permanent: the URL or branch is not allowed. Raised before any process is spawned."""


class CloneFailed(Exception):
    """git clone did not produce a usable work tree.

    kind: repository_not_found | branch_not_found | repository_too_large | invalid_repository
    (permanent), clone_timeout | clone_failed (retryable).
    """

    def __init__(self, message: str, *, kind: ErrorKind, retryable: bool):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable


class CloneAborted(Exception):
    """should_stop() became true (job canceled, lease lost, shutdown): git was killed."""


@dataclass(frozen=True)
class RepositorySource:
    url: str  # what git is given (normalized; for local ones a file:// URL)
    display: str  # safe to log: never contains credentials
    host: str  # "" for local
    branch: str | None


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE_RE = re.compile(r"^[^/]*:")  # "git@github.com:a/b", "host:path": a colon before any slash
# Used with fullmatch: "$" alone would also accept a trailing newline.
_HOST_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_PATH_RE = re.compile(r"[A-Za-z0-9._~/-]+")
_BRANCH_RE = re.compile(r"[A-Za-z0-9._/-]+")


def check_repository(
    url: str, branch: str | None, *, allowed_hosts: Sequence[str], allow_local: bool
) -> RepositorySource:
    """Return a normalized source, or raise RepositoryRefused naming the problem."""
    if not isinstance(url, str) or not url:
        raise RepositoryRefused("repository URL is empty")
    checked_branch = _check_branch(branch)
    _check_raw_url(url)
    if _looks_local(url, allow_local):
        if not allow_local:
            raise RepositoryRefused("local repositories are not allowed; use an https:// URL")
        return _check_local(url, checked_branch)
    return _check_https(url, checked_branch, allowed_hosts)


def _looks_local(url: str, allow_local: bool) -> bool:
    if url.startswith("/") or url.lower().startswith("file:"):
        return True
    # With local sources allowed, "repo" or "./repo" is a (refused) relative path, not a bad URL.
    return allow_local and "://" not in url and not _SCP_LIKE_RE.match(url)


def _check_raw_url(url: str) -> None:
    """Checks that apply to every form of URL, local ones included."""
    if len(url) > MAX_URL_LENGTH:
        raise RepositoryRefused(f"repository URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise RepositoryRefused("repository URL contains whitespace or control characters")
    if url.startswith("-"):
        # git would read it as an option (e.g. --upload-pack=...), whatever else we do.
        raise RepositoryRefused("repository URL must not start with '-'")
    if "::" in url:
        # "ext::sh -c ...", "fd::3": git's remote-helper syntax, which can run commands.
        raise RepositoryRefused("repository URL uses git's '::' transport syntax, which is not allowed")
    if "?" in url or "#" in url:
        raise RepositoryRefused("repository URL must not contain a query string or fragment")


def _check_https(url: str, branch: str | None, allowed_hosts: Sequence[str]) -> RepositorySource:
    match = _SCHEME_RE.match(url)
    if match is None:
        if _SCP_LIKE_RE.match(url):
            raise RepositoryRefused("scp-like repository addresses (host:path) are not allowed; use https://")
        raise RepositoryRefused("repository URL is not a URL; use https://HOST/OWNER/REPO")
    scheme = match.group(1).lower()
    if scheme != "https":
        raise RepositoryRefused(f"repository URL scheme '{scheme}' is not allowed; use https")

    rest = url[match.end() :]
    authority, slash, path = rest.partition("/")
    host = _check_authority(authority)
    allowed = {h.strip().lower() for h in allowed_hosts}
    if host not in allowed:
        raise RepositoryRefused(f"repository host '{host}' is not in the allowed hosts")
    path = _check_path(path if slash else "")
    if host == "github.com":
        path = _github_path(path)
    normalized = f"https://{host}/{path}"
    return RepositorySource(url=normalized, display=normalized, host=host, branch=branch)


def _check_authority(authority: str) -> str:
    if "@" in authority:
        raise RepositoryRefused("repository URL must not contain credentials (user@ or user:password@)")
    host, colon, port = authority.partition(":")
    if colon and port != "443":
        raise RepositoryRefused("repository URL must not name a port other than 443")
    host = host.lower()
    if not host:
        raise RepositoryRefused("repository URL has no host")
    if not _HOST_RE.fullmatch(host):
        raise RepositoryRefused(f"repository host '{host}' is not a valid host name")
    return host


def _check_path(path: str) -> str:
    """Return the path without leading/trailing slashes; refuse anything surprising."""
    path = path.removesuffix("/")  # one trailing slash is common in pasted URLs
    if not path:
        raise RepositoryRefused("repository URL has an empty path")
    if not _PATH_RE.fullmatch(path):
        raise RepositoryRefused("repository URL path may only contain letters, digits and . _ ~ / -")
    segments = path.split("/")
    if ".." in segments:
        raise RepositoryRefused("repository URL path must not contain '..'")
    if any(not s for s in segments):
        raise RepositoryRefused("repository URL path must not contain empty segments ('//')")
    if any(s[0] in "-." for s in segments):
        raise RepositoryRefused("repository URL path segments must not start with '-' or '.'")
    return path


def _github_path(path: str) -> str:
    """GitHub repositories are exactly OWNER/REPO[.git]; normalize to OWNER/REPO."""
    segments = path.split("/")
    if len(segments) != 2:
        raise RepositoryRefused("GitHub repository URL must look like https://github.com/OWNER/REPO")
    owner, name = segments
    name = name.removesuffix(".git")
    if not name or name[0] in "-.":
        raise RepositoryRefused("GitHub repository URL must look like https://github.com/OWNER/REPO")
    return f"{owner}/{name}"


def _check_local(url: str, branch: str | None) -> RepositorySource:
    if url.lower().startswith("file:"):
        if not url.lower().startswith("file:///"):
            raise RepositoryRefused("local repository URL must be file:///ABSOLUTE/PATH")
        raw = url[len("file://") :]
    else:
        raw = url
    if "%" in raw:
        # A file:// URL could percent-encode anything; demos and tests have no need for it.
        raise RepositoryRefused("local repository path must not contain '%'")
    path = Path(raw)
    if not path.is_absolute():
        raise RepositoryRefused("local repository path must be absolute")
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise RepositoryRefused(f"local repository path '{raw}' does not exist") from None
    if not resolved.is_dir():
        raise RepositoryRefused(f"local repository path '{raw}' is not a directory")
    uri = resolved.as_uri()
    return RepositorySource(url=uri, display=uri, host="", branch=branch)


def _check_branch(branch: str | None) -> str | None:
    if branch is None:
        return None
    if not isinstance(branch, str) or not branch:
        raise RepositoryRefused("branch name is empty")
    if len(branch) > MAX_BRANCH_LENGTH:
        raise RepositoryRefused(f"branch name is longer than {MAX_BRANCH_LENGTH} characters")
    if not _BRANCH_RE.fullmatch(branch):
        raise RepositoryRefused("branch name may only contain letters, digits and . _ / -")
    if branch[0] in "-/.":
        raise RepositoryRefused("branch name must not start with '-', '/' or '.'")
    if ".." in branch or "//" in branch or "@{" in branch or "/." in branch:
        raise RepositoryRefused("branch name must not contain '..', '//', '/.' or '@{'")
    if branch.endswith((".lock", "/", ".")):
        raise RepositoryRefused("branch name must not end with '.lock', '/' or '.'")
    return branch


def _assert_checked(source: RepositorySource) -> None:
    """Cheap re-check so a RepositorySource built by hand cannot smuggle options or transports."""
    url = source.url
    expected_prefix = f"https://{source.host}/" if source.host else "file:///"
    if not url.startswith(expected_prefix) or "::" in url or any(ch.isspace() for ch in url):
        raise RepositoryRefused("repository source was not produced by check_repository")
    _check_branch(source.branch)


# ---------------------------------------------------------------------------------------------
# Cloning
# ---------------------------------------------------------------------------------------------


def clone_repository(
    source: RepositorySource,
    dest: Path,
    *,
    timeout: float,
    max_bytes: int,
    max_files: int = DEFAULT_MAX_FILES,
    token: str | None = None,
    token_owners: Sequence[str] = (),
    should_stop: Callable[[], bool] = lambda: False,
) -> str:
    """Shallow single-branch clone into dest (must not exist or be empty); returns the commit sha.

    `token` is sent only for repositories of `token_owners` (see token_applies); anything else is
    cloned anonymously, so a job queued for someone else's private repository cannot borrow it.
    On any failure dest is removed. Raises CloneFailed, CloneAborted or RepositoryRefused.
    """
    _assert_checked(source)
    dest = Path(dest).absolute()  # git runs with cwd=dest.parent
    _check_dest(dest)
    secrets = _secrets(token)  # a malformed token is refused whatever the repository
    if not token_applies(source, token_owners):
        token = None
    if should_stop():
        raise CloneAborted(f"clone of {source.display} stopped before it started")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # An empty HOME next to dest (not inside: git wants dest empty) so no user config applies.
    home = Path(tempfile.mkdtemp(prefix=f".{dest.name}.git-home-", dir=dest.parent))
    ok = False
    try:
        _run_clone(
            source,
            dest,
            home,
            timeout=timeout,
            max_bytes=max_bytes,
            max_files=max_files,
            token=token,
            secrets=secrets,
            should_stop=should_stop,
        )
        sha = _read_head(source, dest)
        ok = True
        return sha
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if not ok:
            shutil.rmtree(dest, ignore_errors=True)


def token_applies(source: RepositorySource, owners: Sequence[str]) -> bool:
    """Whether the repository's owner (its URL's first path segment) is one of `owners`.

    Entries are "HOST/OWNER", or "OWNER" for github.com; compared without case, as hosts and
    GitHub's owner names are.
    """
    if not source.host:
        return False
    owner = source.url.removeprefix(f"https://{source.host}/").split("/", 1)[0]
    wanted = {entry.lower() if "/" in entry else f"github.com/{entry.lower()}" for entry in owners}
    return f"{source.host}/{owner}".lower() in wanted


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise ValueError(f"clone destination {dest} must not exist or be an empty directory")


def _secrets(token: str | None) -> list[str]:
    """The strings that must never appear in a message: the token and its header encoding."""
    if not token:
        return []
    if any(ch in token for ch in "\r\n\0"):
        # Would let the token inject extra HTTP headers; never echo it.
        raise ValueError("repository token contains line breaks or NUL characters")
    return [token, _basic_auth(token)]


def _basic_auth(token: str) -> str:
    # GitHub's convention for tokens over HTTP basic auth.
    return base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")


def _clone_argv(source: RepositorySource, dest: Path) -> list[str]:
    git_exe = shutil.which("git", path=os.environ.get("PATH", os.defpath)) or "git"
    argv = [git_exe, "-c", "protocol.allow=never", "-c", "protocol.https.allow=always"]
    if not source.host:
        argv += ["-c", "protocol.file.allow=always"]
    for setting in GIT_MEMORY_CONFIG:
        argv += ["-c", setting]
    argv += [
        "-c", "core.hooksPath=/dev/null",
        "-c", "core.fsmonitor=false",
        "-c", "submodule.recurse=false",
        # A repository's symlinks become plain files holding the target: nothing in the clone leads out
        # of it (Claude's Read tool follows links). In the clone's own config too, for later checkouts.
        "-c", "core.symlinks=false",
        "clone", "--depth", "1", "--single-branch", "--no-tags",
        "--config=core.symlinks=false",
        "--template=",  # no template dir: nothing (hooks included) is copied into .git
    ]  # fmt: skip
    if source.branch:
        argv += ["--branch", source.branch]
    return [*argv, "--", source.url, str(dest)]


def _clone_env(source: RepositorySource, home: Path, token: str | None) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(
        {
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",  # English, parseable messages
            "LANGUAGE": "C",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": shutil.which("false") or "/bin/false",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_LFS_SKIP_SMUDGE": "1",
            # Overrides protocol.*.allow entirely: a second fence around the -c options.
            "GIT_ALLOW_PROTOCOL": "https" if source.host else "file",
        }
    )
    if token and source.host:
        # Through the environment, never argv: /proc/PID/cmdline is world-readable, environ is not.
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.https://{source.host}/.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {_basic_auth(token)}",
            }
        )
    return env


def _launcher_argv(env: dict[str, str]) -> list[str]:
    """`prlimit --as=… env -u NAME ...` for every agent variable not in env.

    GitPython's execute() always starts from a copy of os.environ and only adds to it; `env -u`
    removes the rest before exec'ing git, so git sees exactly `env` (names are not secret). prlimit
    puts git and its helpers under GIT_ADDRESS_SPACE.
    """
    prlimit_exe = shutil.which("prlimit") or "/usr/bin/prlimit"
    env_exe = shutil.which("env") or "/usr/bin/env"
    argv = [prlimit_exe, f"--as={GIT_ADDRESS_SPACE}", "--", env_exe]
    for name in sorted(set(os.environ) - set(env)):
        argv += ["-u", name]
    return argv


def _run_clone(
    source: RepositorySource,
    dest: Path,
    home: Path,
    *,
    timeout: float,
    max_bytes: int,
    max_files: int,
    token: str | None,
    secrets: list[str],
    should_stop: Callable[[], bool],
) -> None:
    env = _clone_env(source, home, token)
    argv = _launcher_argv(env) + _clone_argv(source, dest)
    handle = git.Git(str(dest.parent)).execute(
        argv, as_process=True, with_stdout=False, env=env, start_new_session=True
    )
    proc: subprocess.Popen = handle.proc
    stderr = _StderrReader(proc)
    try:
        outcome = _watch(proc, dest, timeout=timeout, max_bytes=max_bytes, max_files=max_files, should_stop=should_stop)
    finally:
        _kill_group(proc)
        stderr.join()
    if outcome == CloneEnd.STOPPED:
        raise CloneAborted(f"clone of {source.display} was stopped")
    if outcome == CloneEnd.TIMEOUT:
        raise CloneFailed(
            f"git clone of {source.display} timed out after {timeout:g} s",
            kind=ErrorKind.CLONE_TIMEOUT,
            retryable=True,
        )
    if outcome in (CloneEnd.TOO_LARGE, CloneEnd.TOO_MANY_FILES):
        limit = f"{max_bytes} bytes" if outcome == CloneEnd.TOO_LARGE else f"{max_files} files (clone_max_files)"
        raise CloneFailed(
            f"repository {source.display} is larger than {limit}",
            kind=ErrorKind.REPOSITORY_TOO_LARGE,
            retryable=False,
        )
    if proc.returncode != 0:
        raise _classify(source, proc.returncode, stderr.text(), secrets)


class CloneEnd(StrEnum):
    """How waiting for git clone ended."""

    DONE = "done"
    STOPPED = "stopped"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    TOO_MANY_FILES = "too_many_files"


def _watch(
    proc: subprocess.Popen,
    dest: Path,
    *,
    timeout: float,
    max_bytes: int,
    max_files: int,
    should_stop: Callable[[], bool],
) -> CloneEnd:
    """Waits for git to end, or for a reason to stop it (then git is still running)."""
    deadline = time.monotonic() + timeout
    interval = POLL_INTERVAL
    while True:
        if should_stop():
            return CloneEnd.STOPPED
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return CloneEnd.TIMEOUT
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=min(interval, remaining))
        started = time.monotonic()
        # Checked after exit too, so a clone that finishes between two polls still obeys the limits.
        size, files = _tree_usage(dest, max_bytes=max_bytes, max_files=max_files)
        if size > max_bytes:
            return CloneEnd.TOO_LARGE
        if files > max_files:
            return CloneEnd.TOO_MANY_FILES
        if proc.returncode is not None:
            return CloneEnd.DONE
        # Walking a huge tree is not free: keep the walk to at most ~20% of the time.
        interval = max(POLL_INTERVAL, 4 * (time.monotonic() - started))


def _tree_usage(root: Path, *, max_bytes: int, max_files: int) -> tuple[int, int]:
    """(bytes, entries) under root (apparent sizes, symlinks not followed); stops past either limit."""
    total = files = 0
    stack = [str(root)]
    while stack and total <= max_bytes and files <= max_files:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        total += entry.stat(follow_symlinks=False).st_size
                        files += 1
                    except FileNotFoundError:
                        continue  # git renames temporary files as it goes
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total, files


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL git and its helpers (git-remote-https, index-pack: same process group)."""
    # Only while the leader is unreaped: until then its pid (= the group id) cannot be reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _StderrReader:
    """Drains git's stderr in a thread (no pipe deadlock), keeping only the tail."""

    def __init__(self, proc: subprocess.Popen):
        self._stream = proc.stderr
        self._tail = bytearray()
        self._thread = threading.Thread(target=self._read, name="git-clone-stderr", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._stream.read1(8192):
                self._tail += chunk
                del self._tail[:-STDERR_KEEP_BYTES]

    def join(self) -> None:
        self._thread.join(timeout=5)

    def text(self) -> str:
        return bytes(self._tail).decode("utf-8", errors="replace")


# Checked in order; the first pattern found anywhere in stderr decides the kind.
_FAILURE_PATTERNS: tuple[tuple[re.Pattern[str], ErrorKind, bool], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind, retryable)
    for pattern, kind, retryable in (
        # git's words for ENOSPC: the host's disk, not the repository (the job is released).
        (r"No space left on device", ErrorKind.HOST_ERROR, True),
        (r"Remote branch .* not found", ErrorKind.BRANCH_NOT_FOUND, False),
        (r"Repository not found", ErrorKind.REPOSITORY_NOT_FOUND, False),
        (r"Authentication failed", ErrorKind.REPOSITORY_NOT_FOUND, False),
        (r"could not read (Username|Password)", ErrorKind.REPOSITORY_NOT_FOUND, False),
        (r"terminal prompts disabled", ErrorKind.REPOSITORY_NOT_FOUND, False),
        (r"returned error: (401|403|404)\b", ErrorKind.REPOSITORY_NOT_FOUND, False),
        (r"does not appear to be a git repository", ErrorKind.REPOSITORY_NOT_FOUND, False),
        (r"not found", ErrorKind.REPOSITORY_NOT_FOUND, False),
    )
)


def _classify(source: RepositorySource, returncode: int, stderr: str, secrets: list[str]) -> CloneFailed:
    lines = [_clean_line(line, secrets) for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    kind, retryable, line = ErrorKind.CLONE_FAILED, True, None
    for pattern, pattern_kind, pattern_retryable in _FAILURE_PATTERNS:
        line = next((candidate for candidate in lines if pattern.search(candidate)), None)
        if line is not None:
            kind, retryable = pattern_kind, pattern_retryable
            break
    if line is None:
        line = _last_meaningful(lines) or f"git exited with status {returncode}"
    return CloneFailed(f"git clone of {source.display} failed: {line}", kind=kind, retryable=retryable)


def _last_meaningful(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else None


def _clean_line(line: str, secrets: list[str]) -> str:
    """One stderr line fit for a job's error field: no secrets, no terminal escapes, bounded."""
    for secret in secrets:
        line = line.replace(secret, "***")
    # Bounded: a hostile server controls "remote:" lines and they end up in the job row.
    return clean_text(line, MESSAGE_MAX_CHARS)


def _read_head(source: RepositorySource, dest: Path) -> str:
    try:
        repo = git.Repo(dest)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise CloneFailed(
            f"git clone of {source.display} did not produce a git work tree",
            kind=ErrorKind.INVALID_REPOSITORY,
            retryable=False,
        ) from None
    try:
        if repo.bare or repo.working_tree_dir is None:
            raise CloneFailed(
                f"git clone of {source.display} did not produce a git work tree",
                kind=ErrorKind.INVALID_REPOSITORY,
                retryable=False,
            )
        try:
            # Resolve HEAD from the ref files only: `repo.head.commit` would spawn `git cat-file`
            # with the agent's whole environment, which this module never hands to git.
            return git.SymbolicReference.dereference_recursive(repo, "HEAD")
        except ValueError:
            raise CloneFailed(
                f"repository {source.display} has no commits", kind=ErrorKind.INVALID_REPOSITORY, retryable=False
            ) from None
    finally:
        repo.close()
