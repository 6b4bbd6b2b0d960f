"""The queue's console commands (`fondation-agent enqueue|jobs|job|cancel`) as real processes against localconvex.

Every command runs as `.venv/bin/fondation-agent …` (the installed console script) with CONVEX_URL and the
deployment's admin key (CONVEX_ADMIN_KEY) in its environment, and is judged by its exit status, stdout and
stderr only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fondation_agent.queue.convex_api import ConvexHttp, WorkerApi
from localconvex.launcher import LocalConvex
from tests.helpers import free_port
from tests.integration.conftest import TOKEN

pytestmark = pytest.mark.timeout(120)

SCRIPT = Path(sys.executable).with_name("fondation-agent")
REPOSITORY = "https://github.com/example/course-repo"
# Only catches hangs: a command against a dead backend must give up on its own, in seconds.
NO_HANG = 30


def agent_cli(
    *args: str, url: str | None, admin_key: str | None, extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items()
        if k not in ("CONVEX_URL", "CONVEX_ADMIN_KEY") and not k.startswith("FONDATION_AGENT_")
    }
    if url is not None:
        env["CONVEX_URL"] = url
    if admin_key is not None:
        env["CONVEX_ADMIN_KEY"] = admin_key
    env.update(extra_env or {})
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=NO_HANG)


@pytest.fixture
def cli(backend: LocalConvex):
    def run(*args: str) -> subprocess.CompletedProcess:
        return agent_cli(*args, url=backend.url, admin_key=backend.admin_key)

    return run


@pytest.fixture(scope="module")
def strict_backend() -> Iterator[LocalConvex]:
    """A backend as deployed for real: only https repository URLs and valid branch names are queued."""
    with LocalConvex(token=TOKEN) as backend:
        yield backend


def enqueue(cli, *args: str) -> str:
    done = cli("enqueue", "--repo", REPOSITORY, *args)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id and "\n" not in job_id, "enqueue prints the id and nothing else"
    return job_id


def test_the_console_script_is_installed() -> None:
    done = agent_cli("version", url=None, admin_key=None)
    assert done.returncode == 0
    assert done.stdout.startswith("fondation-agent ")


def test_enqueue_prints_an_id_that_job_shows(cli) -> None:
    job_id = enqueue(cli, "--branch", "main", "--prompt", "Teach the storage layer", "--max-attempts", "5")
    done = cli("job", job_id, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["docs"] == []
    job = shown["job"]
    assert job["_id"] == job_id
    assert (job["status"], job["repositoryUrl"], job["branch"]) == ("pending", REPOSITORY, "main")
    assert (job["prompt"], job["maxAttempts"], job["attempts"]) == ("Teach the storage layer", 5, 0)
    assert "leaseToken" not in job

    human = cli("job", job_id)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert f"id:         {job_id}" in lines
    assert "status:     pending" in lines
    assert f"repository: {REPOSITORY} (main)" in lines
    assert "attempts:   0 of 5" in lines


def test_enqueue_uses_the_default_prompt_and_the_dedup_key(cli) -> None:
    first = enqueue(cli, "--dedup-key", "course-repo")
    assert enqueue(cli, "--dedup-key", "course-repo") == first, "an unfinished job with the key is reused"
    assert enqueue(cli, "--dedup-key", "other") != first
    job = json.loads(cli("job", first, "--json").stdout)["job"]
    assert job["prompt"] == "Turn this repository into a course for new contributors."
    assert job["maxAttempts"] == 3


def test_jobs_lists_newest_first_as_a_table_and_as_json(cli, backend: LocalConvex) -> None:
    older = enqueue(cli)
    with _closing(backend.url) as client:
        api = WorkerApi(client, TOKEN, "host-1")
        claim = api.claim(60_000)
        assert claim is not None and claim.job_id == older
        api.heartbeat(claim, 60_000, status="analyzing", currentStep=2, totalSteps=6)
    newer = enqueue(cli, "--max-attempts", "2")

    done = cli("jobs")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "STEP", "TRIES", "AGE", "REPOSITORY"]
    assert [row.split() for row in rows] == [
        [newer, "pending", "-", "0/2", rows[0].split()[4], REPOSITORY],
        [older, "analyzing", "2/6", "1/3", rows[1].split()[4], REPOSITORY],
    ]
    assert all(row.split()[4].endswith(("s", "m")) for row in rows), "ages such as 0s"
    column = header.index("REPOSITORY")
    assert all(row[column:] == REPOSITORY for row in rows), "columns line up"

    listed = json.loads(cli("jobs", "--json").stdout)
    assert [job["_id"] for job in listed] == [newer, older]
    assert listed[1]["currentStep"] == 2 and listed[1]["leaseOwner"] == "host-1"
    assert [job["_id"] for job in json.loads(cli("jobs", "--json", "--limit", "1").stdout)] == [newer]


def test_jobs_status_filter(cli) -> None:
    kept = enqueue(cli)
    canceled = enqueue(cli)
    assert cli("cancel", canceled).returncode == 0
    assert [j["_id"] for j in json.loads(cli("jobs", "--status", "pending", "--json").stdout)] == [kept]
    assert [j["_id"] for j in json.loads(cli("jobs", "--status", "canceled", "--json").stdout)] == [canceled]
    assert json.loads(cli("jobs", "--status", "completed", "--json").stdout) == []
    table = cli("jobs", "--status", "canceled").stdout.splitlines()
    assert len(table) == 2 and table[1].split()[:2] == [canceled, "canceled"]
    wrong = cli("jobs", "--status", "done")
    assert wrong.returncode == 2 and "invalid choice: 'done'" in wrong.stderr


def test_cancel_a_pending_job(cli) -> None:
    job_id = enqueue(cli)
    done = cli("cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{job_id}: canceled"
    assert "status:     canceled" in cli("job", job_id).stdout.splitlines()
    assert json.loads(cli("job", job_id, "--json").stdout)["job"]["status"] == "canceled"
    again = cli("cancel", job_id)
    assert again.returncode == 0 and again.stdout.strip() == f"{job_id}: canceled", "canceling twice is harmless"


def test_a_cancel_carries_the_operators_reason_as_the_jobs_error(cli) -> None:
    job_id = enqueue(cli)
    assert cli("cancel", job_id, "--reason", "wrong branch, queued again").returncode == 0
    job = json.loads(cli("job", job_id, "--json").stdout)["job"]
    assert (job["status"], job["error"]) == ("canceled", "wrong branch, queued again")
    untouched = enqueue(cli)
    too_long = cli("cancel", untouched, "--reason", "x" * 100_000)
    assert too_long.returncode == 1 and "reason is too long" in too_long.stderr, too_long.stderr
    assert json.loads(cli("job", untouched, "--json").stdout)["job"]["status"] == "pending"


def test_cancel_a_running_job_requests_it(cli, backend: LocalConvex) -> None:
    job_id = enqueue(cli)
    with _closing(backend.url) as client:
        assert WorkerApi(client, TOKEN, "host-1").claim(60_000) is not None
    done = cli("cancel", job_id)
    assert done.returncode == 0 and done.stdout.strip() == f"{job_id}: cancel requested"
    assert "status:     running (cancel requested)" in cli("job", job_id).stdout.splitlines()


def test_backfill_after_an_upgrade_counts_the_jobs(cli) -> None:
    # Jobs of the earlier shape are the component's test (queue/component/migrations.test.ts); here,
    # the command end to end: operator:backfill, then operator:backfillPending until done.
    job_id = enqueue(cli)
    done = cli("backfill")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "backfilled 0 job(s) in the first batch", "every job has a shard and is counted",
    ]
    assert json.loads(cli("job", job_id, "--json").stdout)["job"]["status"] == "pending"


def test_a_finished_job_cannot_be_canceled(cli, backend: LocalConvex) -> None:
    job_id = enqueue(cli)
    with _closing(backend.url) as client:
        api = WorkerApi(client, TOKEN, "host-1")
        api.complete(api.claim(60_000))
    done = cli("cancel", job_id)
    assert done.returncode == 1
    assert done.stderr.strip() == f"fondation-agent: job {job_id} is already completed"


def test_a_bad_repository_url_is_refused_with_the_functions_message(strict_backend: LocalConvex) -> None:
    for repo, message in [
        ("http://github.com/a/b", "repositoryUrl must be an https URL, not http"),
        ("https://user:secret@github.com/a/b", "repositoryUrl must not contain credentials"),
        ("not a url", 'repositoryUrl "not a url" is not a URL'),
    ]:
        done = agent_cli("enqueue", "--repo", repo, url=strict_backend.url, admin_key=strict_backend.admin_key)
        assert done.returncode == 1, done
        assert done.stdout == ""
        assert done.stderr.strip() == f"fondation-agent: {message}"
    done = agent_cli("enqueue", "--repo", REPOSITORY, "--branch=--upload-pack=evil",
                     url=strict_backend.url, admin_key=strict_backend.admin_key)
    assert (done.returncode, done.stderr.strip()) == (
        1, 'fondation-agent: branch "--upload-pack=evil" is not a valid branch name'
    )
    listed = agent_cli("jobs", "--json", url=strict_backend.url, admin_key=strict_backend.admin_key)
    assert listed.stdout.strip() == "[]", "nothing was queued"


def test_the_url_flag_and_a_missing_url(backend: LocalConvex) -> None:
    done = agent_cli("jobs", url=None, admin_key=backend.admin_key)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == "fondation-agent: config: convex_url: set CONVEX_URL or pass --url"
    assert agent_cli("enqueue", "--repo", REPOSITORY, url=None, admin_key=backend.admin_key).returncode == 2
    flagged = agent_cli("jobs", "--json", "--url", backend.url, url=None, admin_key=backend.admin_key)
    assert (flagged.returncode, flagged.stdout.strip()) == (0, "[]")
    # --url wins over CONVEX_URL.
    dead = f"http://127.0.0.1:{free_port()}"
    assert agent_cli("jobs", "--json", "--url", backend.url, url=dead, admin_key=backend.admin_key).returncode == 0


def test_the_admin_key_comes_from_the_environment_or_a_file_never_the_command_line(
    backend: LocalConvex, tmp_path: Path,
) -> None:
    for key in (None, "", "  "):
        missing = agent_cli("jobs", url=backend.url, admin_key=key)
        assert (missing.returncode, missing.stdout) == (2, ""), missing
        assert missing.stderr.strip() == (
            "fondation-agent: config: admin key: set CONVEX_ADMIN_KEY or pass --admin-key-file "
            "(the deployment's admin key)"
        )
    key_file = tmp_path / "admin-key"
    key_file.write_text(backend.admin_key + "\n")
    from_file = agent_cli("jobs", "--json", "--admin-key-file", str(key_file), url=backend.url, admin_key="wrong")
    assert (from_file.returncode, from_file.stdout.strip()) == (0, "[]"), "the file wins over the environment"
    absent = agent_cli("jobs", "--admin-key-file", str(tmp_path / "nope"), url=backend.url, admin_key=None)
    assert absent.returncode == 2 and "admin key: cannot read" in absent.stderr
    wrong = agent_cli("jobs", url=backend.url, admin_key="wrong")
    assert wrong.returncode == 1 and "admin key was invalid" in wrong.stderr
    assert "wrong" not in wrong.stderr.replace("admin key was invalid", ""), "the key is never printed"
    flag = agent_cli("jobs", "--admin-key", backend.admin_key, url=backend.url, admin_key=None)
    assert flag.returncode == 2 and "unrecognized arguments" in flag.stderr


def test_unknown_jobs(cli) -> None:
    enqueue(cli)
    for command in ("job", "cancel"):
        done = cli(command, "not-a-job-id")
        assert done.returncode == 1, done
        assert done.stdout == ""
    assert cli("job", "not-a-job-id").stderr.strip() == "fondation-agent: no job not-a-job-id"
    assert cli("cancel", "not-a-job-id").stderr.strip() == 'fondation-agent: "not-a-job-id" is not a job id'


def test_a_backend_that_is_down_is_a_clear_error_within_seconds() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["job", "x"], ["enqueue", "--repo", REPOSITORY], ["cancel", "x"]):
        done = agent_cli(*args, url=url, admin_key="any")  # agent_cli's timeout fails the test on a hang
        assert done.returncode == 1, done
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fondation-agent: "), done.stderr
        assert f"cannot reach Convex at {url}" in lines[0]
        assert "Traceback" not in done.stderr


class _closing:
    """A ConvexHttp for test set-up, closed on exit."""

    def __init__(self, url: str) -> None:
        self.client = ConvexHttp(url, read_timeout=10, retries=0)

    def __enter__(self) -> ConvexHttp:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
