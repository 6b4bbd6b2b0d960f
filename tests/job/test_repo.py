"""fondation_agent.job.repo: refusing hostile repository input, cloning with limits.

Real git repositories in tmp_path; no network (the one https clone targets 127.0.0.1:443, which
is refused at once). Where a test must observe or control the git process itself, a `git` shim
is put first on PATH: a shell script that records its argv/environment or hangs.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import git
import pytest

from fondation_agent.job.repo import (
    GIT_ADDRESS_SPACE,
    CloneAborted,
    CloneFailed,
    RepositoryRefused,
    RepositorySource,
    check_repository,
    clone_repository,
    token_applies,
)

REAL_GIT = shutil.which("git")
HOSTS = ["github.com", "gitlab.example.org"]
TOKEN = "ghp_S3cretT0kenValue1234567890"
TOKEN_B64 = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

pytestmark = pytest.mark.timeout(60)


def run_git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        [REAL_GIT, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(repo: Path, name: str, content: str | bytes) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    run_git("add", name, cwd=repo)
    run_git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", f"add {name}", cwd=repo)


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """main: 3 commits; feature: one more file."""
    repo = tmp_path / "origin"
    repo.mkdir()
    run_git("init", "-q", "-b", "main", cwd=repo)
    commit(repo, "README.md", "# demo\n")
    commit(repo, "src/app.py", "print('hi')\n")
    commit(repo, "docs/guide.md", "guide\n")
    run_git("checkout", "-q", "-b", "feature", cwd=repo)
    commit(repo, "feature.txt", "feature\n")
    run_git("checkout", "-q", "main", cwd=repo)
    return repo


def local(repo: Path, branch: str | None = None) -> RepositorySource:
    return check_repository(str(repo), branch, allowed_hosts=[], allow_local=True)


def write_shim(directory: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a `git` shell script first on PATH (repo.py resolves git through PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "git"
    shim.write_text("#!/bin/sh\n" + body)
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return shim


def hanging_shim(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A git that never finishes and has a child of its own (to check the whole group dies)."""
    pid_file, child_file = directory / "git.pid", directory / "child.pid"
    write_shim(
        directory,
        f'echo $$ > "{pid_file}.tmp" && mv "{pid_file}.tmp" "{pid_file}"\n'
        f'sleep 50 &\necho $! > "{child_file}.tmp" && mv "{child_file}.tmp" "{child_file}"\nwait\n',
        monkeypatch,
    )
    return pid_file, child_file


def gone(pid: int, within: float = 5.0) -> bool:
    """True once pid no longer runs (absent or a zombie awaiting its reaper)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# check_repository
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        pytest.fail(f"a process was spawned: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(git.Git, "execute", forbidden)
    monkeypatch.setattr(os, "posix_spawn", forbidden)
    monkeypatch.setattr(os, "fork", forbidden)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc", "local repositories are not allowed"),
        ("/etc", "local repositories are not allowed"),
        ("ssh://git@github.com/a/b", "scheme 'ssh' is not allowed; use https"),
        ("git://github.com/a/b", "scheme 'git' is not allowed"),
        ("http://github.com/a/b", "scheme 'http' is not allowed"),
        ("git@github.com:a/b.git", "scp-like"),
        ("github.com:a/b", "scp-like"),
        ("ext::sh -c touch% /tmp/pwned", "whitespace"),
        ("ext::sh%20-c%20touch", "'::' transport syntax"),
        ("fd::3", "'::' transport syntax"),
        ("https::github.com/a/b", "'::' transport syntax"),
        ("--upload-pack=touch /tmp/x", "whitespace"),
        ("--upload-pack=touch", "must not start with '-'"),
        ("-u", "must not start with '-'"),
        ("https://user:pw@github.com/a/b", "credentials"),
        ("https://token@github.com/a/b", "credentials"),
        ("https://github.com@evil.example/a/b", "credentials"),
        ("https://github.com/a/b c", "whitespace"),
        ("https://github.com/a/b\n", "whitespace"),
        ("https://github.com/a/b\x00", "control"),
        ("https://github.com/a/b\x1b[31m", "control"),
        ("https://github.com/a/b?x=1", "query string"),
        ("https://github.com/a/b#frag", "fragment"),
        ("https://github.com/a/../b", "'..'"),
        ("https://github.com/a/b/..", "'..'"),
        ("https://github.com", "empty path"),
        ("https://github.com/", "empty path"),
        ("https://github.com//a/b", "empty segments"),
        ("https://github.com/a/-b", "must not start with '-' or '.'"),
        ("https://github.com/.a/b", "must not start with '-' or '.'"),
        ("https://github.com/a/b%2e%2e", "may only contain"),
        ("https://github.com/a/b\\c", "may only contain"),
        ("https://github.com/a/b/c", "OWNER/REPO"),
        ("https://github.com/a/.git", "must not start with '-' or '.'"),
        ("https://evil.example/a/b", "host 'evil.example' is not in the allowed hosts"),
        ("https://api.github.com/a/b", "host 'api.github.com' is not in the allowed hosts"),
        ("https://github.com.evil.example/a/b", "not in the allowed hosts"),
        ("https://github.com:8443/a/b", "port other than 443"),
        ("https://github.com:/a/b", "port other than 443"),
        ("https://[::1]/a/b", "'::' transport syntax"),
        ("https:///a/b", "no host"),
        ("https://git_hub.com/a/b", "not a valid host name"),
        ("https://github.com/" + "a" * 2048, "longer than 2048"),
        ("", "empty"),
        ("a/b", "is not a URL"),
    ],
)
def test_hostile_urls_are_refused_without_spawning(url: str, fragment: str, no_spawn: None) -> None:
    with pytest.raises(RepositoryRefused) as caught:
        check_repository(url, None, allowed_hosts=HOSTS, allow_local=False)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("url", ["https://user:hunter2@github.com/a/b", "https://hunter2@github.com/a/b"])
def test_refusals_do_not_echo_credentials(url: str, no_spawn: None) -> None:
    with pytest.raises(RepositoryRefused) as caught:
        check_repository(url, None, allowed_hosts=HOSTS, allow_local=False)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "branch",
    [
        "--foo",
        "-b",
        "a..b",
        "$(x)",
        "a b",
        "",
        "/main",
        ".hidden",
        "a/.b",
        "a//b",
        "x@{1}",
        "main.lock",
        "main/",
        "main.",
        "tab\there",
        "a" * 201,
        "naïve",
        "a;b",
        "main\n",
        "main\r",
        "a`b`",
        "a\nb",
    ],
)
def test_hostile_branches_are_refused_without_spawning(branch: str, no_spawn: None) -> None:
    with pytest.raises(RepositoryRefused, match="branch name"):
        check_repository("https://github.com/a/b", branch, allowed_hosts=HOSTS, allow_local=False)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/owner/repo", "https://github.com/owner/repo"),
        ("https://github.com/owner/repo.git", "https://github.com/owner/repo"),
        ("https://github.com/owner/repo/", "https://github.com/owner/repo"),
        ("https://github.com/owner/repo.git/", "https://github.com/owner/repo"),
        ("HTTPS://GitHub.COM:443/Owner/Repo", "https://github.com/Owner/Repo"),
        ("https://github.com/my-org/my.repo_v2", "https://github.com/my-org/my.repo_v2"),
        ("https://gitlab.example.org/group/sub/repo.git", "https://gitlab.example.org/group/sub/repo.git"),
        ("https://gitlab.example.org/~user/repo", "https://gitlab.example.org/~user/repo"),
    ],
)
def test_allowed_urls_are_normalized(url: str, expected: str, no_spawn: None) -> None:
    source = check_repository(url, "release/1.2", allowed_hosts=HOSTS, allow_local=False)
    assert source.url == expected
    assert source.display == expected
    assert source.host == expected.split("/")[2]
    assert source.branch == "release/1.2"


def test_allowed_hosts_match_exactly_and_case_insensitively(no_spawn: None) -> None:
    source = check_repository("https://GITHUB.com/a/b", None, allowed_hosts=["GitHub.com"], allow_local=False)
    assert source.host == "github.com"
    with pytest.raises(RepositoryRefused, match="not in the allowed hosts"):
        check_repository("https://github.com/a/b", None, allowed_hosts=[], allow_local=False)


def test_local_sources_when_allowed(tmp_path: Path, no_spawn: None) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    link = tmp_path / "link"
    link.symlink_to(repo)
    for given in (str(repo), f"file://{repo}", str(link), f"{repo}/"):
        source = check_repository(given, None, allowed_hosts=[], allow_local=True)
        assert source.url == repo.resolve().as_uri()
        assert source.host == ""
    refusals = {
        "relative": "must be absolute",
        "./r": "must be absolute",
        str(tmp_path / "missing"): "does not exist",
        f"file://{tmp_path / 'missing'}": "does not exist",
        "file://localhost/etc": "file:///ABSOLUTE/PATH",
        "file:relative": "file:///ABSOLUTE/PATH",
        f"{repo}%2F..": "must not contain '%'",
    }
    (tmp_path / "afile").write_text("x")
    refusals[str(tmp_path / "afile")] = "not a directory"
    for given, fragment in refusals.items():
        with pytest.raises(RepositoryRefused, match=fragment.replace(".", r"\.")):
            check_repository(given, None, allowed_hosts=[], allow_local=True)


def test_hand_made_hostile_source_is_refused_by_clone(tmp_path: Path, no_spawn: None) -> None:
    for source in (
        RepositorySource(url="--upload-pack=touch /tmp/x", display="x", host="", branch=None),
        RepositorySource(url="ext::sh -c id", display="x", host="", branch=None),
        RepositorySource(url="https://evil.example/a", display="x", host="github.com", branch=None),
        RepositorySource(url="file:///tmp", display="x", host="", branch="--orphan"),
    ):
        with pytest.raises(RepositoryRefused):
            clone_repository(source, tmp_path / "dest", timeout=10, max_bytes=10**6)
    assert not (tmp_path / "dest").exists()


# ---------------------------------------------------------------------------------------------
# clone_repository: real local clones
# ---------------------------------------------------------------------------------------------


def test_local_clone_is_shallow_and_single_branch(origin: Path, tmp_path: Path) -> None:
    dest = tmp_path / "work" / "repo"
    sha = clone_repository(local(origin), dest, timeout=30, max_bytes=10**8)

    assert sha == run_git("rev-parse", "main", cwd=origin)
    assert (dest / "src" / "app.py").read_text() == "print('hi')\n"
    assert not (dest / "feature.txt").exists()
    assert run_git("rev-parse", "--is-shallow-repository", cwd=dest) == "true"
    assert run_git("rev-list", "--count", "HEAD", cwd=dest) == "1"
    remote_refs = run_git(
        "for-each-ref", "--format=%(refname)", "refs/remotes", "refs/tags", cwd=dest
    ).split()
    assert [ref for ref in remote_refs if ref != "refs/remotes/origin/HEAD"] == ["refs/remotes/origin/main"]
    assert not (dest / ".git" / "hooks").exists()  # --template=: no sample hooks copied in
    # The private HOME made next to dest is gone; nothing else was left behind.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["repo"]


def test_branch_option_picks_the_other_branch(origin: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    sha = clone_repository(local(origin, "feature"), dest, timeout=30, max_bytes=10**8)
    assert sha == run_git("rev-parse", "feature", cwd=origin)
    assert (dest / "feature.txt").read_text() == "feature\n"
    assert run_git("rev-parse", "--abbrev-ref", "HEAD", cwd=dest) == "feature"


def test_relative_dest_is_relative_to_the_current_directory(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clone_repository(local(origin), Path("jobs/one"), timeout=30, max_bytes=10**8)
    assert (tmp_path / "jobs" / "one" / "README.md").exists()


def test_existing_empty_dest_is_accepted_non_empty_is_not(origin: Path, tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    clone_repository(local(origin), dest, timeout=30, max_bytes=10**8)
    with pytest.raises(ValueError, match="must not exist or be an empty directory"):
        clone_repository(local(origin), dest, timeout=30, max_bytes=10**8)
    assert (dest / "README.md").exists()  # a refused destination is left alone


def test_missing_branch_is_permanent(origin: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(origin, "no-such-branch"), dest, timeout=30, max_bytes=10**8)
    assert caught.value.kind == "branch_not_found"
    assert caught.value.retryable is False
    assert str(caught.value).startswith(f"git clone of {origin.as_uri()} failed: ")
    assert "no-such-branch" in str(caught.value)
    assert not dest.exists()


def test_directory_that_is_not_a_repository_is_permanent(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "file.txt").write_text("not a repo")
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(plain), dest, timeout=30, max_bytes=10**8)
    assert caught.value.kind == "repository_not_found"
    assert caught.value.retryable is False
    assert "does not appear to be a git repository" in str(caught.value)
    assert not dest.exists()


def test_empty_repository_is_invalid(tmp_path: Path) -> None:
    empty = tmp_path / "empty-origin"
    empty.mkdir()
    run_git("init", "-q", cwd=empty)
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(empty), dest, timeout=30, max_bytes=10**8)
    assert (caught.value.kind, caught.value.retryable) == ("invalid_repository", False)
    assert not dest.exists()


def test_tiny_timeout_kills_git_and_is_retryable(origin: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(origin), dest, timeout=0.001, max_bytes=10**8)
    assert (caught.value.kind, caught.value.retryable) == ("clone_timeout", True)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["origin"]


def test_timeout_kills_the_whole_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file, child_file = hanging_shim(tmp_path / "shim", monkeypatch)
    source = check_repository("https://github.com/a/b", None, allowed_hosts=HOSTS, allow_local=False)
    started = time.monotonic()
    with pytest.raises(CloneFailed) as caught:
        clone_repository(source, tmp_path / "dest", timeout=1.0, max_bytes=10**8)
    assert time.monotonic() - started < 10
    assert (caught.value.kind, caught.value.retryable) == ("clone_timeout", True)
    assert gone(int(pid_file.read_text()))
    assert gone(int(child_file.read_text()))


def test_size_limit_after_clone_is_permanent(origin: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(origin), dest, timeout=30, max_bytes=1)
    assert (caught.value.kind, caught.value.retryable) == ("repository_too_large", False)
    assert not dest.exists()


def test_size_limit_kills_a_growing_clone(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    run_git("init", "-q", cwd=big)
    for i in range(4):
        commit(big, f"blob{i}.bin", os.urandom(4 * 1024 * 1024))
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(big), dest, timeout=30, max_bytes=256 * 1024)
    assert (caught.value.kind, caught.value.retryable) == ("repository_too_large", False)
    assert "larger than 262144 bytes" in str(caught.value)
    assert not dest.exists()


def test_file_count_limit_catches_a_tree_of_tiny_files(tmp_path: Path) -> None:
    many = tmp_path / "many"
    (many / "tiny").mkdir(parents=True)
    run_git("init", "-q", cwd=many)
    for i in range(40):
        (many / "tiny" / f"{i}.txt").write_text("")
    run_git("add", "-A", cwd=many)
    run_git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "tiny", cwd=many)
    dest = tmp_path / "dest"
    with pytest.raises(CloneFailed) as caught:
        clone_repository(local(many), dest, timeout=30, max_bytes=10**8, max_files=20)
    assert (caught.value.kind, caught.value.retryable) == ("repository_too_large", False)
    assert "larger than 20 files (clone_max_files)" in str(caught.value)
    assert not dest.exists()


def test_symlinks_are_checked_out_as_plain_files(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"  # a file out of the repository, the test's own
    outside.write_text("not for the job\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    run_git("init", "-q", cwd=linked)
    (linked / "escape").symlink_to(outside)
    run_git("add", "escape", cwd=linked)  # the link itself (never written through)
    run_git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "link", cwd=linked)
    dest = tmp_path / "dest"
    clone_repository(local(linked), dest, timeout=30, max_bytes=10**8)
    assert not (dest / "escape").is_symlink()
    assert (dest / "escape").read_text() == str(outside)  # the link's target, as text
    assert run_git("config", "core.symlinks", cwd=dest) == "false"  # later checkouts too


def test_git_runs_under_an_address_space_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "limits"
    write_shim(tmp_path / "shim", f'grep "Max address space" /proc/self/limits > "{record}"\nexec "{REAL_GIT}" "$@"\n',
               monkeypatch)
    repo = tmp_path / "one"
    repo.mkdir()
    run_git("init", "-q", cwd=repo)
    commit(repo, "README.md", "# one\n")
    clone_repository(local(repo), tmp_path / "dest", timeout=30, max_bytes=10**8)
    assert record.read_text().split()[3:5] == [str(GIT_ADDRESS_SPACE)] * 2  # soft and hard


def test_should_stop_before_start_spawns_nothing(origin: Path, tmp_path: Path, no_spawn: None) -> None:
    with pytest.raises(CloneAborted):
        clone_repository(
            local(origin), tmp_path / "dest", timeout=30, max_bytes=10**8, should_stop=lambda: True
        )
    assert not (tmp_path / "dest").exists()


def test_should_stop_kills_git_and_leaves_no_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file, child_file = hanging_shim(tmp_path / "shim", monkeypatch)
    source = check_repository("https://github.com/a/b", None, allowed_hosts=HOSTS, allow_local=False)
    dest = tmp_path / "dest"

    def stop_once_running() -> bool:
        return child_file.exists()

    with pytest.raises(CloneAborted):
        clone_repository(source, dest, timeout=30, max_bytes=10**8, should_stop=stop_once_running)
    assert gone(int(pid_file.read_text()))
    assert gone(int(child_file.read_text()))
    assert not dest.exists()


# ---------------------------------------------------------------------------------------------
# https: environment, token handling, failure classification
# ---------------------------------------------------------------------------------------------


def test_https_connection_refused_is_retryable(tmp_path: Path) -> None:
    # A socket bound to port 443 of a loopback address of our own, never listening: git's connection
    # is refused, and nothing else can listen there while the test runs.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.3", 443))
        source = check_repository("https://127.0.0.3/x", None, allowed_hosts=["127.0.0.3"], allow_local=False)
        dest = tmp_path / "dest"
        with pytest.raises(CloneFailed) as caught:
            clone_repository(source, dest, timeout=20, max_bytes=10**8, token=TOKEN, token_owners=["127.0.0.3/x"])
    assert (caught.value.kind, caught.value.retryable) == ("clone_failed", True)
    assert str(caught.value).startswith("git clone of https://127.0.0.3/x failed: ")
    assert TOKEN not in str(caught.value) and TOKEN_B64 not in str(caught.value)
    assert not dest.exists()


def read_nul_file(path: Path) -> list[str]:
    return [item for item in path.read_bytes().decode().split("\0") if item]


def test_token_goes_to_git_env_only_and_agent_env_is_not_inherited(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "record"
    record.mkdir()
    # Records what git was given, then clones the local origin instead of touching the network.
    write_shim(
        tmp_path / "shim",
        f'printf "%s\\0" "$0" "$@" > "{record}/argv"\n'
        f'cat /proc/$$/cmdline > "{record}/cmdline"\n'
        f'env -0 > "{record}/env"\n'
        "for last; do :; done\n"
        f'GIT_ALLOW_PROTOCOL=file exec "{REAL_GIT}" clone -q --depth 1 -- "{origin.as_uri()}" "$last"\n',
        monkeypatch,
    )
    expected_sha = run_git("rev-parse", "main", cwd=origin)
    monkeypatch.setenv("FONDATION_AGENT_SECRET_SENTINEL", "do-not-leak")
    monkeypatch.setenv("GIT_DIR", "/nonexistent/hijack")
    spawned: list[list[str]] = []
    real_execute = git.Git.execute

    def spy(self, command, *args, **kwargs):
        spawned.append(list(command))
        return real_execute(self, command, *args, **kwargs)

    monkeypatch.setattr(git.Git, "execute", spy)
    source = check_repository("https://github.com/owner/repo", None, allowed_hosts=HOSTS, allow_local=False)
    env_before = os.environ.copy()
    sha = clone_repository(source, tmp_path / "dest", timeout=30, max_bytes=10**8, token=TOKEN, token_owners=["Owner"])
    assert sha == expected_sha
    assert len(spawned) == 1  # reading HEAD afterwards spawned no second git
    assert os.environ == env_before

    argv = read_nul_file(record / "argv")
    cmdline = read_nul_file(record / "cmdline")
    launcher = [arg for command in spawned for arg in command]
    for observed in (argv, cmdline, launcher):
        joined = "\n".join(observed)
        assert TOKEN not in joined and TOKEN_B64 not in joined and "Authorization" not in joined
    assert argv[1:4] == ["-c", "protocol.allow=never", "-c"]
    assert "--depth" in argv and "--single-branch" in argv and "--no-tags" in argv
    assert argv[-3:] == ["--", "https://github.com/owner/repo", str(tmp_path / "dest")]
    assert "protocol.file.allow=always" not in argv

    env = dict(item.split("=", 1) for item in read_nul_file(record / "env"))
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {TOKEN_B64}"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["GIT_LFS_SKIP_SMUDGE"] == "1"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["HOME"] != os.environ.get("HOME")
    assert not Path(env["HOME"]).is_relative_to(tmp_path / "dest")
    assert "FONDATION_AGENT_SECRET_SENTINEL" not in env
    assert "GIT_DIR" not in env
    assert "SSH_ASKPASS" not in env
    allowed = {
        "PATH", "LANG", "LC_ALL", "LANGUAGE", "HOME", "XDG_CONFIG_HOME", "GIT_TERMINAL_PROMPT",
        "GIT_ASKPASS", "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "GIT_LFS_SKIP_SMUDGE",
        "GIT_ALLOW_PROTOCOL", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0",
        "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
        "PWD", "SHLVL", "_",  # added by the shim's own /bin/sh
    }  # fmt: skip
    assert set(env) <= allowed, set(env) - allowed


@pytest.mark.parametrize("owners", [[], ["other"], ["owner-x"], ["gitlab.com/owner"], ["github.com/own"]])
def test_a_repository_of_an_owner_not_listed_is_cloned_without_the_token(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owners: list[str]
) -> None:
    record = tmp_path / "env"
    write_shim(
        tmp_path / "shim",
        f'env -0 > "{record}"\nfor last; do :; done\n'
        f'GIT_ALLOW_PROTOCOL=file exec "{REAL_GIT}" clone -q --depth 1 -- "{origin.as_uri()}" "$last"\n',
        monkeypatch,
    )
    source = check_repository("https://github.com/owner/repo", None, allowed_hosts=HOSTS, allow_local=False)
    clone_repository(source, tmp_path / "dest", timeout=30, max_bytes=10**8, token=TOKEN, token_owners=owners)
    env = read_nul_file(record)
    assert not any(TOKEN_B64 in item or item.startswith(("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY")) for item in env), env


@pytest.mark.parametrize(
    ("url", "owners", "applies"),
    [
        ("https://github.com/Acme/repo", ["acme"], True),
        ("https://github.com/acme/repo", ["github.com/ACME"], True),
        ("https://github.com/acme/repo", ["gitlab.example.com/acme"], False),
        ("https://gitlab.example.com/acme/group/repo", ["gitlab.example.com/acme"], True),
        ("https://gitlab.example.com/acme/repo", ["acme"], False),  # a bare owner means github.com
        ("https://github.com/acmecorp/repo", ["acme"], False),
    ],
)
def test_token_applies_to_the_listed_owners_only(url: str, owners: list[str], applies: bool) -> None:
    source = check_repository(url, None, allowed_hosts=["github.com", "gitlab.example.com"], allow_local=False)
    assert token_applies(source, owners) is applies


def test_local_clone_gets_no_token_header(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "env"
    write_shim(tmp_path / "shim", f'env -0 > "{record}"\nexec "{REAL_GIT}" "$@"\n', monkeypatch)
    clone_repository(local(origin), tmp_path / "dest", timeout=30, max_bytes=10**8, token=TOKEN)
    env = read_nul_file(record)
    assert not any(
        TOKEN_B64 in item or item.startswith(("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY")) for item in env
    )


def test_token_with_line_break_is_refused_and_not_echoed(
    origin: Path, tmp_path: Path, no_spawn: None
) -> None:
    with pytest.raises(ValueError) as caught:
        clone_repository(
            local(origin), tmp_path / "dest", timeout=30, max_bytes=10**8, token="abc\r\nX-Evil: 1"
        )
    assert "abc" not in str(caught.value) and "Evil" not in str(caught.value)


@pytest.mark.parametrize(
    ("stderr", "kind", "retryable"),
    [
        (
            "remote: Repository not found.\nfatal: repository 'https://github.com/a/b/' not found",
            "repository_not_found",
            False,
        ),
        (
            "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
            "repository_not_found",
            False,
        ),
        (
            "remote: Invalid username or password.\nfatal: Authentication failed for 'https://github.com/a/b/'",
            "repository_not_found",
            False,
        ),
        (
            "fatal: unable to access 'https://github.com/a/b/': The requested URL returned error: 403",
            "repository_not_found",
            False,
        ),
        (
            "fatal: unable to access 'https://github.com/a/b/': The requested URL returned error: 401",
            "repository_not_found",
            False,
        ),
        (
            "warning: Could not find remote branch dev to clone.\n"
            "fatal: Remote branch dev not found in upstream origin",
            "branch_not_found",
            False,
        ),
        (
            "fatal: unable to access 'https://github.com/a/b/': Could not resolve host: github.com",
            "clone_failed",
            True,
        ),
        (
            "fatal: unable to access 'https://github.com/a/b/': Failed to connect to github.com port 443: "
            "Connection timed out",
            "clone_failed",
            True,
        ),
        (
            "fatal: unable to access 'https://github.com/a/b/': The requested URL returned error: 502",
            "clone_failed",
            True,
        ),
        (
            "error: RPC failed; curl 56 GnuTLS recv error\nfatal: early EOF\nfatal: index-pack failed",
            "clone_failed",
            True,
        ),
        ("", "clone_failed", True),
        ("fatal: write error: No space left on device", "host_error", True),
    ],
)
def test_failure_classification_from_git_stderr(
    stderr: str, kind: str, retryable: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message_file = tmp_path / "stderr.txt"
    message_file.write_text(stderr + ("\n" if stderr else ""))
    write_shim(tmp_path / "shim", f'cat "{message_file}" >&2\nexit 128\n', monkeypatch)
    source = check_repository("https://github.com/a/b", "dev", allowed_hosts=HOSTS, allow_local=False)
    with pytest.raises(CloneFailed) as caught:
        clone_repository(source, tmp_path / "dest", timeout=30, max_bytes=10**8)
    assert (caught.value.kind, caught.value.retryable) == (kind, retryable)
    expected_line = stderr.splitlines()[-1] if stderr else "git exited with status 128"
    if kind == "repository_not_found" and stderr.startswith("remote: Repository"):
        expected_line = "remote: Repository not found."
    assert str(caught.value) == f"git clone of https://github.com/a/b failed: {expected_line}"
    assert not (tmp_path / "dest").exists()


def test_token_is_scrubbed_from_git_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A git that echoes its credentials (header value and raw token) in its error message.
    write_shim(
        tmp_path / "shim",
        f'echo "remote: header was $GIT_CONFIG_VALUE_0" >&2\n'
        f'echo "fatal: Authentication failed for https://x-access-token:{TOKEN}@github.com/a/b" >&2\n'
        "exit 128\n",
        monkeypatch,
    )
    source = check_repository("https://github.com/a/b", None, allowed_hosts=HOSTS, allow_local=False)
    with pytest.raises(CloneFailed) as caught:
        clone_repository(source, tmp_path / "dest", timeout=30, max_bytes=10**8, token=TOKEN, token_owners=["a"])
    message = str(caught.value)
    assert (caught.value.kind, caught.value.retryable) == ("repository_not_found", False)
    assert TOKEN not in message and TOKEN_B64 not in message
    assert "***" in message
    assert repr(caught.value).count(TOKEN) == 0


def test_terminal_escapes_and_huge_lines_are_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_shim(
        tmp_path / "shim",
        "long=$(head -c 5000 /dev/zero | tr '\\0' x)\n"
        "printf 'fatal: \\033[31mbad\\033[0m %s\\n' \"$long\" >&2\nexit 128\n",
        monkeypatch,
    )
    source = check_repository("https://github.com/a/b", None, allowed_hosts=HOSTS, allow_local=False)
    with pytest.raises(CloneFailed) as caught:
        clone_repository(source, tmp_path / "dest", timeout=30, max_bytes=10**8)
    message = str(caught.value)
    assert "\x1b" not in message
    assert len(message) < 400
