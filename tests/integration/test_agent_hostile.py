"""Untrusted job rows and untrusted CLI output, through a real agent and a real backend."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)

HOSTILE_REPOSITORIES = [
    ("file:///etc", None, "local repositories are not allowed"),
    ("ssh://git@github.com/acme/widgets.git", None, "scheme 'ssh' is not allowed"),
    ("git@github.com:acme/widgets.git", None, "scp-like repository addresses"),
    ("ext::sh", None, "'::' transport syntax"),
    ("ext::sh -c touch% /tmp/pwned", None, "whitespace"),
    ("--upload-pack=/tmp/pwned", None, "must not start with '-'"),
    ("https://user:pw@github.com/acme/widgets", None, "must not contain credentials"),
    ("https://gitlab.com/acme/widgets", None, "'gitlab.com' is not in the allowed hosts"),
    ("https://github.com/acme/widgets", "--foo", "branch name must not start with '-'"),
    ("https://github.com/acme/widgets", "a..b", "branch name must not contain '..'"),
]


def test_hostile_repositories_fail_permanently_before_any_process_starts(queue, agents):
    jobs = {queue.enqueue(repository=url, prompt="pid-file,succeed", **({"branch": b} if b else {})): (url, b, hint)
            for url, b, hint in HOSTILE_REPOSITORIES}
    # Production policy: no local repositories, github.com only.
    agent = agents(allow_local_repositories=False, concurrency=4)
    for job_id, (url, _branch, hint) in jobs.items():
        job = queue.wait_finished(job_id)
        assert job["status"] == "failed", (url, job)
        assert job["errorKind"] == "repository_refused", (url, job)
        assert job["attempts"] == 1, "permanent: never retried"
        assert hint in job["error"], (url, job["error"])
        assert "pw@" not in job["error"], "credentials never echoed"
    assert not list(agent.state.iterdir()), "the CLI never started (it would have written a pid file)"
    assert not any("Cloning" in str(e.get("event")) for e in agent.log_events())
    root = agent.directory / "workspaces"
    assert not root.exists() or not [e for e in root.iterdir() if not e.name.startswith(".")]


def test_a_symlink_to_a_secret_in_the_output_is_never_read(repo, queue, agents, tmp_path):
    secret = tmp_path / "secrets" / "worker-token"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-VALUE\n")
    job_id = queue.enqueue(repository=repo, prompt="symlink")
    agents(cli_env={"FAKE_CLI_SECRET": str(secret)})
    job = queue.wait_finished(job_id)
    assert job["status"] == "completed", job
    docs = queue.docs(job_id)
    assert [d["slug"] for d in docs] == ["index", "01_first", "02_second"], "links skipped, files kept"
    assert all("TOP-SECRET" not in d["content"] for d in docs)


def test_an_output_directory_shipped_in_the_repository_is_not_taken_for_results(tmp_path, queue, agents):
    from tests.git_repos import make_git_repo

    planted = make_git_repo(tmp_path / "planted", {
        "app.py": "print('hi')\n",
        ".claude-tutorial-output/99_fake.md": "# Planted by the repository\n",
    })
    job_id = queue.enqueue(repository=planted, prompt="succeed")
    agents()
    job = queue.wait_finished(job_id)
    assert job["status"] == "completed"
    assert all("Planted" not in d["content"] for d in queue.docs(job_id))


def test_a_huge_document_fails_the_job_as_invalid_output_with_a_clear_error(repo, queue, agents):
    job_id = queue.enqueue(repository=repo, prompt="huge")
    agents()
    job = queue.wait_finished(job_id)
    assert job["status"] == "failed"
    assert job["errorKind"] == "invalid_output"
    assert "03_huge.md is 5000007 bytes; a document may be at most 900000 bytes (max_doc_bytes)" in job["error"]
    assert job["attempts"] == 1
    assert queue.docs(job_id) == []


def alias_bomb() -> str:
    """Front matter whose chapterIndex stands for 9**9 strings once its aliases are expanded (as the
    error message's repr once did). Block style: the fake CLI splits its modes at commas."""
    levels = ["a0: &a0\n" + "- lol\n" * 9]
    levels += [f"a{n}: &a{n}\n" + f"- *a{n - 1}\n" * 9 for n in range(1, 9)]
    return "".join(levels) + "chapterIndex: *a8"


def test_a_yaml_alias_bomb_fails_its_job_once_and_the_agent_runs_on(repo, queue, agents):
    agent = agents(concurrency=2)
    honest = queue.enqueue(repository=repo, prompt="steps:silent")
    queue.wait_for(honest, lambda job: job["status"] == "analyzing")  # its CLI waits for us: one slot taken
    bomb = queue.enqueue(repository=repo, prompt=f"front-matter:{alias_bomb()}")
    job = queue.wait_finished(bomb)
    assert (job["status"], job["errorKind"], job["attempts"]) == ("failed", "invalid_output", 1), job
    assert "03_extra.md: front matter: YAML anchors and aliases are not allowed (line 1)" in job["error"]
    for step in range(1, 7):
        (agent.state / f"{honest}.go{step}").touch()
    assert queue.wait_finished(honest)["status"] == "completed"
    assert queue.get(bomb)["attempts"] == 1, "never claimed again"
    assert agent.proc.poll() is None and agent.health()[0] == 200, "the same agent, still running"
