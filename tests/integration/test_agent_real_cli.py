"""The agent with a CLI that behaves like the real Fondation CLI: its progress in every form, its
layout as the platform's kinds, its failures told apart, a broken host that stops eating jobs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.git_repos import make_git_repo
from tests.helpers import eventually
from tests.integration.agent import FAKE_CLI
from tests.integration.test_agent_systemd_protocol import NotifySocket

pytestmark = pytest.mark.timeout(300)  # several agents and jobs each; generous on a loaded machine
HOST_KEY = "test-claude-key"  # the harness's claude.env (tests/integration/agent.py)


@pytest.fixture
def model():
    """The fake Anthropic API the agents' gateways forward to, accepting the harness's key."""
    with FakeAnthropic(api_key=HOST_KEY) as fake:
        yield fake


def wrong_key(agents_dir: Path) -> str:
    """A credentials file whose key the model refuses."""
    path = agents_dir / "wrong-claude.env"
    path.write_text("ANTHROPIC_API_KEY=sk-ant-revoked\n")
    path.chmod(0o600)
    return str(path)

def walk_the_steps(queue, agent, job_id: str) -> list[dict]:
    """Lets the fake CLI go one step at a time, once the job shows that step; every sample taken on
    the way is returned (so tests can check currentStep never went back)."""
    samples: list[dict] = []

    def at(step: int):
        def check(job: dict) -> bool:
            samples.append(job)
            return job.get("currentStep") == step
        return check

    shown = []
    for step in range(1, 7):
        shown.append(queue.wait_for(job_id, at(step)))
        (agent.state / f"{job_id}.go{step}").touch()
    assert [job["totalSteps"] for job in shown] == [6] * 6
    steps = [job["currentStep"] for job in samples if job.get("currentStep")]
    assert steps == sorted(steps), "currentStep never goes backwards"
    return shown


def kinds(docs: list[dict]) -> list[tuple[str, int, str]]:
    return sorted((d["kind"], int(d["chapterIndex"]), d["slug"]) for d in docs)


@pytest.mark.parametrize("form", ["json", "tty", "progress"])
def test_progress_in_each_form_the_cli_prints(repo, queue, agents, form):
    agent = agents()
    job_id = queue.enqueue(repository=repo, prompt=f"steps:{form}")
    shown = walk_the_steps(queue, agent, job_id)
    assert [job["progress"].startswith(f"Step {n}/6: ") for n, job in enumerate(shown, 1)] == [True] * 6
    assert shown[1]["progress"].startswith("Step 2/6: Analyzing relationships")
    job = queue.wait_finished(job_id)
    assert job["status"] == "completed", job


def test_a_silent_cli_shows_its_steps_and_counts_from_its_files(repo, queue, agents):
    agent = agents()
    job_id = queue.enqueue(repository=repo, prompt="steps:silent")
    shown = walk_the_steps(queue, agent, job_id)
    assert [job["progress"] for job in shown] == [
        "Step 1/6: Extracting abstractions",
        "Step 2/6: Analyzing relationships",
        "Step 3/6: Determining order",
        "Step 4/6: Generating chapters (1 of 2 written)",
        "Step 5/6: Reviewing chapters (1 of 2 reviewed)",
        "Step 6/6: Creating tutorials (1 of 2 written)",
    ]
    assert queue.wait_finished(job_id)["status"] == "completed"


def test_the_real_layout_becomes_the_platforms_kinds_and_the_log_reads_as_text(repo, queue, agents):
    agent = agents()
    job_id = queue.enqueue(repository=repo, prompt="steps:json")
    walk_the_steps(queue, agent, job_id)
    assert queue.wait_finished(job_id)["status"] == "completed"
    docs = queue.docs(job_id)
    assert kinds(docs) == [
        ("chapter", 0, "chapter_0_queue"), ("chapter", 1, "chapter_1_worker"),
        ("toc", 0, "toc"),
        ("tutorial", 0, "tutorial_0_queue"), ("tutorial", 1, "tutorial_1_worker"),
        ("yaml", 1, "step1_abstractions"), ("yaml", 2, "step2_relationships"), ("yaml", 3, "step3_order"),
    ]
    by_slug = {d["slug"]: d for d in docs}
    assert by_slug["chapter_0_queue"]["content"] == "# reviewed-chapters 0_queue\n", "the reviewed chapter"
    assert by_slug["toc"]["content"] == "# Table of contents\n\n1. Queue — Where jobs wait.\n2. Worker — Takes jobs.\n"
    relayed = [e for e in agent.log_events() if e.get("job_id") == job_id and e.get("stream") == "stdout"]
    assert {"event": "[FONDATION_STEP_3/6] Determining order step=3/6 phase=Order", "level": "info"}.items() \
        <= next(e for e in relayed if "FONDATION_STEP_3/6" in e["event"]).items(), "the JSON line as text"
    assert not any(e["event"].startswith("{") for e in relayed)


def test_an_error_logged_on_stdout_is_the_jobs_error(repo, queue, agents):
    agent = agents()
    job_id = queue.enqueue(repository=repo, prompt="error:Failed to create abstractions file", maxAttempts=1)
    job = queue.wait_finished(job_id)
    assert (job["status"], job["errorKind"]) == ("failed", "cli_failed")
    assert job["error"] == "the CLI exited with status 1: Analysis failed: Failed to create abstractions file"
    errors = [e for e in agent.log_events() if e.get("job_id") == job_id and e.get("stream") == "stdout"
              and e["level"] == "error"]
    assert errors and errors[0]["event"].startswith("Analysis failed error=")


@pytest.mark.parametrize("status", [429, 529])
def test_rate_limits_and_overload_retry_later(repo, queue, agents, model, status):
    model.error = status
    agent = agents(claude_upstream=model.url)
    job = queue.wait_finished(queue.enqueue(repository=repo, prompt="claude", maxAttempts=2), timeout=90)
    assert (job["status"], job["errorKind"], job["attempts"]) == ("failed", "rate_limited", 2), job
    assert agent.metric("fondation_agent_host_paused") == 0


def test_a_cli_printing_an_auth_error_is_the_jobs_failure_and_pauses_nothing(repo, queue, agents, model):
    agent = agents(claude_upstream=model.url, host_failure_threshold=1)
    text = '401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}'
    job = queue.wait_finished(queue.enqueue(repository=repo, prompt=f"error:{text}", maxAttempts=1))
    assert (job["status"], job["errorKind"]) == ("failed", "cli_failed"), job
    assert agent.metric("fondation_agent_host_paused") == 0
    assert agent.health()[0] == 200


def test_a_broken_claude_login_pauses_the_host_releases_its_jobs_and_sighup_resumes(
        tmp_path, repo, queue, agents, model):
    notify = NotifySocket(tmp_path / "notify.sock")
    model.error = 401  # the model refuses the host's credential
    agent = agents(env={"NOTIFY_SOCKET": str(notify.path)}, host_pause_initial=600, claude_upstream=model.url)
    jobs = [queue.enqueue(repository=repo, prompt="claude") for _ in range(3)]
    eventually(lambda: agent.metric("fondation_agent_host_paused") == 1, timeout=60)
    # At the first refusal, whatever host_failure_threshold says: its job is for another host.
    assert agent.metric("fondation_agent_host_failures_total", 'kind="claude_auth"') == 1
    status, health = agent.health()
    assert status == 503 and health["reason"].startswith("paused claiming until ")
    assert "1 host failure in a row, the last claude_auth" in health["reason"]
    assert "the Anthropic API refused the job's requests (claude_auth)" in health["reason"]
    assert eventually(lambda: notify.seen("STATUS=paused claiming until "))
    for job_id in jobs:  # released, not counted: none failed, none used an attempt
        job = queue.get(job_id)
        assert (job["status"], job["attempts"]) == ("pending", 0), job

    model.error = None  # the account is fixed
    agent.signal(signal.SIGHUP)
    for job_id in jobs:
        assert queue.wait_finished(job_id)["status"] == "completed"
    assert agent.metric("fondation_agent_host_paused") == 0
    assert agent.health()[0] == 200


def test_a_pause_ends_by_itself_and_a_healthy_host_takes_the_jobs_meanwhile(tmp_path, repo, queue, agents, model):
    broken = agents("broken", host_failure_threshold=1, host_pause_initial=600, claude_upstream=model.url,
                    claude_credentials_file=wrong_key(tmp_path))
    job_id = queue.enqueue(repository=repo, prompt="claude")
    eventually(lambda: broken.metric("fondation_agent_host_paused") == 1, timeout=60)
    healthy = agents("healthy", claude_upstream=model.url)
    assert queue.wait_finished(job_id)["status"] == "completed", "one broken host does not fail the queue"
    assert queue.get(job_id)["result"]["worker"] == "healthy"

    broken.stop()
    healthy.stop()
    model.error = 401
    short = agents("short", host_failure_threshold=1, host_pause_initial=1, claude_upstream=model.url)
    second = queue.enqueue(repository=repo, prompt="claude")
    eventually(lambda: any(e["event"] == "host problems in a row: claiming paused" for e in short.log_events()),
               timeout=60)
    model.error = None
    assert queue.wait_finished(second, timeout=60)["status"] == "completed", "claiming resumed after the pause"


@pytest.mark.parametrize(
    ("front_matter", "message"),
    [
        ("chapterIndex: 5000", "chapterIndex must be a whole number from 0 to 1000"),
        ("title: " + "[" * 2000 + "]" * 2000, "front matter: not valid YAML"),
        ("chapterIndex: 1" + "0" * 5000, "front matter: not valid YAML"),
    ],
)
def test_output_convex_would_refuse_fails_once_as_invalid_output(repo, queue, agents, front_matter, message):
    agents()
    job_id = queue.enqueue(repository=repo, prompt=f"front-matter:{front_matter}")
    job = queue.wait_finished(job_id)
    assert (job["status"], job["errorKind"], job["attempts"]) == ("failed", "invalid_output", 1), job
    assert message in job["error"] and "03_extra.md" in job["error"]


def test_a_slug_convex_would_refuse_is_made_valid(repo, queue, agents):
    agents()
    job_id = queue.enqueue(repository=repo, prompt="front-matter:slug: _intro")
    assert queue.wait_finished(job_id)["status"] == "completed"
    assert "intro" in [d["slug"] for d in queue.docs(job_id)]


def test_a_progress_text_longer_than_the_queue_takes_is_cut_not_resent(tmp_path, queue, agents):
    deep = tmp_path / ("r" * 200) / ("e" * 200) / ("p" * 200)
    long_repo = make_git_repo(deep)
    agent = agents()
    job_id = queue.enqueue(repository=long_repo, prompt="succeed")
    job = queue.wait_finished(job_id)
    assert (job["status"], job["attempts"]) == ("completed", 1), job
    assert not any(e["event"] == "heartbeat refused; its report is dropped" for e in agent.log_events())


def test_the_repository_cannot_configure_claude_code(tmp_path, queue, agents):
    hooked = make_git_repo(tmp_path / "hooked", {
        "app.py": "X = 1\n",
        ".claude/settings.json": '{"hooks": {"PreToolUse": [{"hooks": [{"type": "command", "command": "id"}]}]}}',
        ".mcp.json": '{"mcpServers": {"evil": {"command": "sh"}}}',
    })
    agent = agents()
    job_id = queue.enqueue(repository=hooked, prompt="claude-config")
    assert queue.wait_finished(job_id)["status"] == "completed"
    removed = [e for e in agent.log_events() if e["event"] == "removed from the clone before the CLI runs"]
    assert removed and removed[0]["paths"] == [".claude", ".mcp.json"]


def test_the_claude_config_check_of_the_fake_cli_can_fail(tmp_path: Path):
    # The check above would pass vacuously if the fake CLI never looked: run it on the raw repository.
    hooked = make_git_repo(tmp_path / "hooked", {"app.py": "X = 1\n", ".mcp.json": "{}"})
    (tmp_path / "out").mkdir()
    done = subprocess.run([sys.executable, str(FAKE_CLI), str(hooked), str(tmp_path / "out"), "claude-config"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 4


def test_a_host_whose_cli_fails_its_preflight_claims_nothing_until_fixed_and_reloaded(tmp_path, repo, queue, agents):
    agent = agents(cli_command=f"{tmp_path}/no-such-cli analyze {{repo}}")
    job_id = queue.enqueue(repository=repo, prompt="succeed")
    eventually(lambda: agent.metric("fondation_agent_host_failures_total", 'kind="preflight"') == 1, timeout=60)
    status, body = agent.health()
    assert status == 503 and f"the CLI cannot be started ({tmp_path}/no-such-cli --version)" in body["reason"]
    assert body["cli_version"] is None
    assert any(e.get("event") == "preflight failed: claiming paused" for e in agent.log_events())
    job = queue.get(job_id)
    assert (job["status"], job["attempts"], job.get("hostReleases", 0)) == ("pending", 0, 0), job

    agent.write_config(cli_command=f"{sys.executable} {FAKE_CLI} {{repo}} {{output}} {{prompt}}")
    agent.signal(signal.SIGHUP)
    assert queue.wait_finished(job_id, timeout=120)["status"] == "completed"
    assert agent.health()[1]["cli_version"] == "fake-cli 1.0.0"


def test_a_cli_missing_at_job_time_is_the_hosts_problem(tmp_path, repo, queue, agents):
    # The version command passes (the CLI went missing after the preflight).
    agent = agents(cli_command=f"{tmp_path}/no-such-cli analyze {{repo}}", host_failure_threshold=1,
                   cli_version_command=f"{sys.executable} {FAKE_CLI} --version")
    job_id = queue.enqueue(repository=repo, prompt="succeed")
    eventually(lambda: agent.metric("fondation_agent_host_paused") == 1, timeout=60)
    assert agent.metric("fondation_agent_host_failures_total", 'kind="host_error"') == 1
    job = queue.get(job_id)
    assert (job["status"], job["attempts"]) == ("pending", 0), job
    assert "host problem on agent (host_error): the CLI cannot be started" in job["progress"]
    assert "cannot be started" in agent.health()[1]["reason"]


def test_a_job_that_keeps_reporting_host_problems_fails_after_max_host_releases(repo, queue, agents, model):
    """A job that meets a host problem everywhere must not bounce between hosts (pausing each) for ever."""
    model.error = 401
    agent = agents(host_pause_initial=0.2, host_pause_max=0.5,  # each refusal pauses; briefly, to come back
                   claude_upstream=model.url)
    job_id = queue.enqueue(repository=repo, prompt="claude")
    job = queue.wait_finished(job_id, timeout=120)
    assert (job["status"], job["errorKind"], job["hostReleases"]) == ("failed", "claude_auth", 3), job
    assert job["error"].startswith("released 3 times for host problems, the last: host problem on ")
    # The agent counts once its thread has ended the attempt, a moment after Convex heard of it.
    assert eventually(lambda: agent.metric("fondation_agent_host_failures_total", 'kind="claude_auth"') == 3)
    assert eventually(lambda: agent.metric("fondation_agent_host_paused") == 0)
