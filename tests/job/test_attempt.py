"""One job attempt (fondation_agent/job/attempt.py) with a fake queue API and a fake runner: no backend, no CLI.

The fake API refuses what the queue's functions refuse (rules.json's limits, as
queue/component/worker.ts checks them), so a value the agent would send and Convex would refuse
fails here in milliseconds: the three drift cases of issue 13 (a slug with a leading `_`, a
chapterIndex past 1,000, a progress text longer than Convex accepts) have their regression tests here.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fondation_agent.config import Config
from fondation_agent.host.logs import get_logger
from fondation_agent.host.metrics import Metrics
from fondation_agent.job.attempt import Job, JobOutcome, Stage
from fondation_agent.queue import rules as q
from fondation_agent.queue.convex_api import Claim, InvalidArgument, LeaseLost
from fondation_agent.queue.rules import ErrorKind, Status
from fondation_agent.sandbox import workspace as workspace_module
from fondation_agent.sandbox.claude_access import ClaudeAccess
from fondation_agent.sandbox.gateway.client import InProcessGateway
from fondation_agent.sandbox.runner import Limits, Outcome, RunResult
from tests.fixtures.fake_anthropic import FakeAnthropic
from tests.git_repos import make_git_repo

pytestmark = pytest.mark.timeout(60)
CHAPTER = "# Introduction\n\nHello.\n"


class FakeApi:
    """WorkerApi's calls, recorded; refused as worker:* refuses them."""

    def __init__(self, *, cancel: bool = False, lease_lost: bool = False, will_retry: bool = False):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cancel = cancel
        self.lease_lost = lease_lost
        self.will_retry = will_retry
        self.refused: list[str] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args(self, name: str) -> list[dict[str, Any]]:
        return [args for called, args in self.calls if called == name]

    def heartbeat(self, claim: Claim, lease_ms: int, **report: Any) -> bool:
        report = {key: value for key, value in report.items() if value is not None}
        self.calls.append(("heartbeat", report))
        if self.lease_lost:
            raise LeaseLost("lease lost")
        if "status" in report and report["status"] not in q.ACTIVE_STATUSES:
            self._refuse(f"status {report['status']!r}")
        self._check_length("progress", report.get("progress", ""), q.MAX_PROGRESS_LENGTH)
        for name in ("currentStep", "totalSteps"):
            if not 0 <= report.get(name, 0) <= q.MAX_STEP:
                self._refuse(f"{name} out of range")
        return self.cancel

    def save_docs(self, claim: Claim, docs: list[dict[str, Any]]) -> None:
        self.calls.append(("save_docs", {"docs": docs}))
        if len(docs) > q.MAX_DOCS_PER_CALL:
            self._refuse("too many docs in one call")
        for doc in docs:
            if not q.SLUG.match(doc["slug"]):
                self._refuse(f"slug {doc['slug']!r} must match {q.SLUG_PATTERN}")
            self._check_length("title", doc["title"], q.MAX_TITLE_LENGTH)
            if doc["kind"] not in q.DOC_KINDS:
                self._refuse(f"kind {doc['kind']!r} is not a doc kind")
            if not 0 <= doc["chapterIndex"] <= q.MAX_DOCS_PER_JOB:
                self._refuse(f"chapterIndex {doc['chapterIndex']} out of range")

    def complete(self, claim: Claim, summary: dict[str, Any] | None = None, *, logs: Any = (),
                 usage: Any = None) -> None:
        self.calls.append(("complete", {"summary": summary, "logs": list(logs), "usage": usage}))

    def fail(self, claim: Claim, error: str, error_kind: str, retryable: bool, *, logs: Any = (),
             usage: Any = None) -> dict[str, Any]:
        self.calls.append(("fail", {"error": error, "errorKind": error_kind, "retryable": retryable,
                                    "logs": list(logs), "usage": usage}))
        self._check_length("error", error, q.MAX_ERROR_LENGTH)
        if not re.match(q.ERROR_KIND_PATTERN, error_kind):
            self._refuse(f"errorKind {error_kind!r}")
        return {"ok": True, "willRetry": self.will_retry and retryable}

    def release(self, claim: Claim, reason: str, host_failure_kind: str | None = None, *,
                logs: Any = (), usage: Any = None) -> dict[str, Any]:
        self.calls.append(("release", {"reason": reason, "host_failure_kind": host_failure_kind, "logs": list(logs),
                                       "usage": usage}))
        self._check_length("reason", reason, q.MAX_PROGRESS_LENGTH)
        return {"ok": True}

    def canceled(self, claim: Claim, *, logs: Any = (), usage: Any = None) -> None:
        self.calls.append(("canceled", {"logs": list(logs), "usage": usage}))

    def _check_length(self, name: str, value: str, limit: int) -> None:
        if q.js_length(value) > limit:
            self._refuse(f"{name} is too long ({q.js_length(value)} characters, at most {limit})")

    def _refuse(self, message: str) -> None:
        # Recorded too: the job survives a refused heartbeat (it drops the report), the test must not.
        self.refused.append(message)
        raise InvalidArgument(message)


class FakeCli:
    """Writes `files` into the output directory and prints `lines`, then ends as `result` says; with
    result STOPPED it runs until stop()."""

    def __init__(self, output: Path, files: dict[str, str], lines: list[str], result: RunResult, exit_code: int):
        for name, content in files.items():
            (output / name).parent.mkdir(parents=True, exist_ok=True)
            (output / name).write_text(content)
        self.lines = lines
        self.result = result
        self.exit_code = exit_code
        self.stopped = threading.Event()
        self.pid = None

    def stdout_lines(self) -> Iterator[str]:
        return iter(self.lines)

    def stop(self) -> None:
        self.stopped.set()

    def wait(self) -> Outcome:
        if self.result == RunResult.STOPPED:
            assert self.stopped.wait(30), "the job never stopped its CLI"
        return Outcome(self.result, self.exit_code, "boom" if self.exit_code else "")


class FakeRunner:
    name = "fake"

    def __init__(self, files: dict[str, str] | None = None, lines: list[str] = (),
                 result: RunResult = RunResult.SUCCESS, exit_code: int = 0):
        self.files = {"chapters/chapter_1_intro.md": CHAPTER} if files is None else files
        self.lines = list(lines)
        self.result = result
        self.exit_code = exit_code
        self.started: list[dict[str, Any]] = []

        self.own_disk = False  # a sandbox with a disk per job (systemd-service) says True
        self.disks_released: list[Path] = []

    def cleanup_leftovers(self) -> list[str]:
        return []

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, unit: str, limits: Limits) -> FakeCli:
        self.started.append({"argv": argv, "env": env, "cwd": cwd, "unit": unit, "limits": limits})
        return FakeCli(Path(env["CLAUDE_OUTPUT_DIR"]), self.files, self.lines, self.result, self.exit_code)

    def give_disk(self, workspace: Path, disk_max: int) -> bool:
        return self.own_disk

    def release_disk(self, workspace: Path) -> bool:
        self.disks_released.append(workspace)
        return True


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "source")


def run_job(tmp_path: Path, repository: Path, api: FakeApi, runner: FakeRunner, *,
            claude: ClaudeAccess | None = None, metrics: Metrics | None = None, **settings: Any) -> JobOutcome:
    """Runs one attempt to its end; the fake API must have refused nothing."""
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path / "workspaces"),
                    allow_local_repositories=True, heartbeat_interval=0.1, lease_time=30.0, **settings)
    claim = Claim(job={"_id": "job1", "repositoryUrl": str(repository), "prompt": "p"}, lease_token="1-t", attempt=1)
    job = Job(claim, config=config, api=api, runner=runner, metrics=metrics or Metrics("w"), log=get_logger(),
              claimed_at=time.monotonic(), claude=claude)
    outcome = job.run()
    assert api.refused == []
    return outcome


def test_a_job_clones_runs_the_cli_saves_its_documents_and_completes(tmp_path: Path, source: Path):
    api, runner = FakeApi(), FakeRunner(lines=["[FONDATION_STEP_1/6] Extracting abstractions"])
    assert run_job(tmp_path, source, api, runner) == JobOutcome.COMPLETED
    assert api.names()[-2:] == ["save_docs", "complete"]
    assert [doc["slug"] for doc in api.args("save_docs")[0]["docs"]] == ["toc", "chapter_1_intro"]
    assert api.args("complete")[0]["summary"]["documents"] == 2
    statuses = [report["status"] for report in api.args("heartbeat") if "status" in report]
    assert statuses == sorted(statuses, key=[Status.CLONING, Status.ANALYZING, Status.GATHERING].index)
    assert runner.started[0]["unit"] == "fondation-job-job1-1"
    assert not (tmp_path / "workspaces" / "job1-1").exists(), "the workspace is removed at the end"


def test_the_live_logs_end_with_the_clis_last_words(tmp_path: Path, source: Path):
    lines = [f"working on part {n}" for n in range(5)] + ["error: the model's answer was unusable"]
    api, runner = FakeApi(), FakeRunner(lines=lines, result=RunResult.EXIT_CODE, exit_code=1)
    assert run_job(tmp_path, source, api, runner) == JobOutcome.FAILED
    # Whatever the heartbeats carried, the attempt's last call carries the rest: nothing is lost.
    sent = [line["text"] for _, args in api.calls for line in args.get("logs", [])]
    assert sent == lines
    assert api.names()[-1] == "fail"


def test_a_job_that_filled_its_own_disk_fails_as_disk_limit_and_is_not_retried(
        tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch):
    # Any file system is "full" for this test; the VM tier fills a real one (tests/system/test_20_limits.py).
    monkeypatch.setattr(workspace_module, "DISK_FULL_MARGIN", 2**62)
    api, runner = FakeApi(will_retry=True), FakeRunner(result=RunResult.EXIT_CODE, exit_code=1)
    runner.own_disk = True
    assert run_job(tmp_path, source, api, runner) == JobOutcome.FAILED
    assert api.args("fail")[0]["errorKind"] == ErrorKind.DISK_LIMIT and api.args("fail")[0]["retryable"] is False
    assert runner.disks_released == [tmp_path / "workspaces" / "job1-1"]


def test_without_a_disk_of_its_own_a_full_file_system_is_not_the_jobs_fault(
        tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(workspace_module, "DISK_FULL_MARGIN", 2**62)
    api, runner = FakeApi(will_retry=True), FakeRunner(result=RunResult.EXIT_CODE, exit_code=1)
    assert run_job(tmp_path, source, api, runner) == JobOutcome.RETRYING
    assert api.args("fail")[0]["errorKind"] == ErrorKind.CLI_FAILED and runner.disks_released == []


def test_a_front_matter_slug_with_a_leading_underscore_is_saved_as_one_convex_accepts(tmp_path: Path, source: Path):
    api = FakeApi()
    runner = FakeRunner(files={"intro.md": f"---\nslug: _intro\n---\n{CHAPTER}"})
    assert run_job(tmp_path, source, api, runner) == JobOutcome.COMPLETED
    assert "intro" in [doc["slug"] for doc in api.args("save_docs")[0]["docs"]]


@pytest.mark.parametrize(("chapter_index", "outcome"), [(q.MAX_DOCS_PER_JOB, JobOutcome.COMPLETED),
                                                        (q.MAX_DOCS_PER_JOB + 1, JobOutcome.FAILED)])
def test_a_chapter_index_past_the_queues_limit_fails_the_job_once_without_sending_it(
    tmp_path: Path, source: Path, chapter_index: int, outcome: JobOutcome
):
    api = FakeApi(will_retry=True)
    runner = FakeRunner(files={"late.md": f"---\nchapterIndex: {chapter_index}\n---\n{CHAPTER}"})
    assert run_job(tmp_path, source, api, runner) == outcome
    if outcome == JobOutcome.FAILED:
        assert "save_docs" not in api.names()
        assert api.args("fail")[0]["errorKind"] == ErrorKind.INVALID_OUTPUT
        assert api.args("fail")[0]["retryable"] is False


def test_progress_texts_are_cut_to_what_convex_accepts(tmp_path: Path):
    # "Cloning <url>" of a long repository path, and a long step text in the CLI's own words.
    deep = make_git_repo(tmp_path.joinpath(*["r" * 200] * 3))
    api = FakeApi()
    runner = FakeRunner(lines=["[FONDATION_STEP_2/6] " + "😀" * 600])
    assert run_job(tmp_path, deep, api, runner) == JobOutcome.COMPLETED
    progress = [report["progress"] for report in api.args("heartbeat") if "progress" in report]
    assert any(text.startswith("Cloning ") and text.endswith("…") for text in progress)
    assert all(q.js_length(text) <= q.MAX_PROGRESS_LENGTH for text in progress)


@pytest.mark.parametrize(("result", "exit_code", "kind", "retryable", "outcome"), [
    (RunResult.EXIT_CODE, 1, ErrorKind.CLI_FAILED, True, JobOutcome.RETRYING),
    (RunResult.SIGNAL, -9, ErrorKind.CRASHED, True, JobOutcome.RETRYING),
    (RunResult.TIMEOUT, -15, ErrorKind.TIMEOUT, True, JobOutcome.RETRYING),
    (RunResult.OOM_KILL, -9, ErrorKind.OOM, False, JobOutcome.FAILED),
])
def test_a_cli_that_did_not_succeed_fails_the_attempt_with_its_kind(
    tmp_path: Path, source: Path, result: RunResult, exit_code: int, kind: ErrorKind, retryable: bool,
    outcome: JobOutcome,
):
    api = FakeApi(will_retry=True)
    assert run_job(tmp_path, source, api, FakeRunner(result=result, exit_code=exit_code)) == outcome
    failed = api.args("fail")[0]
    assert (failed["errorKind"], failed["retryable"]) == (kind, retryable)
    assert "save_docs" not in api.names()


def test_a_cancel_request_stops_the_cli_and_is_acknowledged(tmp_path: Path, source: Path):
    api = FakeApi(cancel=True)
    assert run_job(tmp_path, source, api, FakeRunner(result=RunResult.STOPPED)) == JobOutcome.CANCELED
    assert api.names()[-1] == "canceled"
    assert not {"save_docs", "complete", "fail"} & set(api.names())


def test_a_lost_lease_stops_the_job_and_writes_nothing_more(tmp_path: Path, source: Path):
    api = FakeApi(lease_lost=True)
    assert run_job(tmp_path, source, api, FakeRunner(result=RunResult.STOPPED)) == JobOutcome.LEASE_LOST
    assert set(api.names()) == {"heartbeat"}


def test_a_cli_that_cannot_start_is_the_hosts_problem_and_is_released(tmp_path: Path, source: Path):
    class MissingCli(FakeRunner):
        def start(self, *args: Any, **kwargs: Any) -> FakeCli:
            raise FileNotFoundError(2, "No such file or directory", "node")

    api = FakeApi()
    assert run_job(tmp_path, source, api, MissingCli()) == JobOutcome.HOST_FAILURE
    assert api.names()[-1] == "release" and "fail" not in api.names()
    assert api.calls[-1][1]["host_failure_kind"] == "host_error", "counted by Convex towards MAX_HOST_RELEASES"


def test_every_outcome_and_stage_is_a_documented_metric_label():
    table = {line.split("|")[1].strip(" `"): line for line in (Path(__file__).parents[2] / "docs" / "metrics.md")
             .read_text().splitlines() if line.startswith("| `fondation_agent_")}
    assert all(f"`{outcome}`" in table["fondation_agent_jobs_finished_total"] for outcome in JobOutcome)
    assert all(f"`{stage}`" in table["fondation_agent_stage_duration_seconds"] for stage in Stage)


KEY = "sk-ant-host-key"


class ClaudeRunner(FakeRunner):
    """A CLI that first sends `requests` Messages API requests where its environment says Claude is."""

    def __init__(self, requests: int, **settings: Any):
        super().__init__(**settings)
        self.requests = requests
        self.statuses: list[int] = []

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, unit: str, limits: Limits) -> FakeCli:
        for _ in range(self.requests):
            connection = http.client.HTTPConnection(env["ANTHROPIC_BASE_URL"].removeprefix("http://"), timeout=30)
            connection.request("POST", "/v1/messages", body=json.dumps({"model": "m", "messages": []}),
                               headers={"x-api-key": env["ANTHROPIC_API_KEY"], "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            self.statuses.append(response.status)
            connection.close()
        return super().start(argv, env=env, cwd=cwd, unit=unit, limits=limits)


@pytest.fixture
def claude_api():
    """The fake model behind an in-process gateway that holds its key, as under sandbox = process."""
    with FakeAnthropic(api_key=KEY) as fake:
        gateway = InProcessGateway(credential={"ANTHROPIC_API_KEY": KEY}, upstream=fake.url).start()
        try:
            yield fake, gateway
        finally:
            gateway.close()


def test_a_job_reaches_claude_with_its_own_token_and_its_usage_goes_to_convex_and_metrics(
        tmp_path: Path, source: Path, claude_api):
    fake, gateway = claude_api
    api, runner, metrics = FakeApi(), ClaudeRunner(2), Metrics("w")
    claude = ClaudeAccess(max_retries=0, gateway=gateway)
    assert run_job(tmp_path, source, api, runner, claude=claude, metrics=metrics) == JobOutcome.COMPLETED
    env = runner.started[0]["env"]
    assert env["ANTHROPIC_BASE_URL"] == gateway.url and env["ANTHROPIC_API_KEY"].startswith("fgw-")
    assert KEY not in json.dumps(env) and "CLAUDE_CODE_OAUTH_TOKEN" not in env
    assert runner.statuses == [200, 200] and [r["key_ok"] for r in fake.requests] == [True, True]
    assert api.args("complete")[0]["usage"] == {"inputTokens": 200, "outputTokens": 40, "cacheReadTokens": 0,
                                                "cacheCreationTokens": 0, "requests": 2}
    assert len(gateway.gateway.attempts) == 0, "the attempt's token is revoked at its end"
    sample = metrics.registry.get_sample_value
    assert sample("fondation_agent_claude_tokens_total", {"kind": "input"}) == 200
    assert sample("fondation_agent_claude_tokens_total", {"kind": "output"}) == 40
    assert sample("fondation_agent_claude_requests_total") == 2


def test_a_credential_the_api_refuses_releases_the_job_as_the_hosts_problem(tmp_path: Path, source: Path, claude_api):
    fake, gateway = claude_api
    fake.error = 401
    api, runner = FakeApi(), ClaudeRunner(1, result=RunResult.EXIT_CODE, exit_code=1)
    assert run_job(tmp_path, source, api, runner, claude=ClaudeAccess(max_retries=0, gateway=gateway)) == \
        JobOutcome.HOST_FAILURE
    assert api.names()[-1] == "release" and api.args("release")[0]["host_failure_kind"] == ErrorKind.CLAUDE_AUTH


def test_what_the_cli_prints_never_makes_a_host_problem(tmp_path: Path, source: Path, claude_api):
    _, gateway = claude_api
    lines = ['401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}']
    api, runner = FakeApi(), ClaudeRunner(1, lines=lines, result=RunResult.EXIT_CODE, exit_code=1)
    assert run_job(tmp_path, source, api, runner, claude=ClaudeAccess(max_retries=0, gateway=gateway)) == \
        JobOutcome.FAILED
    assert "release" not in api.names()
    assert (api.args("fail")[0]["errorKind"], api.args("fail")[0]["retryable"]) == (ErrorKind.CLI_FAILED, True)


def test_a_rate_limit_fails_the_attempt_for_a_later_retry(tmp_path: Path, source: Path, claude_api):
    fake, gateway = claude_api
    fake.error = 429
    api, runner = FakeApi(will_retry=True), ClaudeRunner(1, result=RunResult.EXIT_CODE, exit_code=1)
    assert run_job(tmp_path, source, api, runner, claude=ClaudeAccess(max_retries=0, gateway=gateway)) == \
        JobOutcome.RETRYING
    assert (api.args("fail")[0]["errorKind"], api.args("fail")[0]["retryable"]) == (ErrorKind.RATE_LIMITED, True)


def test_a_job_over_its_budget_fails_as_budget_exceeded_and_is_not_retried(tmp_path: Path, source: Path, claude_api):
    _, gateway = claude_api
    api, runner = FakeApi(will_retry=True), ClaudeRunner(3, result=RunResult.EXIT_CODE, exit_code=1)
    claude = ClaudeAccess(max_retries=0, max_tokens=150, gateway=gateway)
    assert run_job(tmp_path, source, api, runner, claude=claude, claude_max_tokens=150) == JobOutcome.FAILED
    assert runner.statuses == [200, 200, 400]
    failed = api.args("fail")[0]
    assert (failed["errorKind"], failed["retryable"]) == (ErrorKind.BUDGET_EXCEEDED, False)
    assert failed["error"] == ("the job needed more of Claude than a job may use: 240 tokens read and written, over "
                               "the limit of 150 (claude_max_tokens); it is not retried")
    assert failed["usage"]["requests"] == 2


def test_a_request_the_sandbox_refuses_is_the_agents_error_not_the_hosts(tmp_path: Path, source: Path):
    api, runner = FakeApi(will_retry=True), FakeRunner(result=RunResult.REFUSED, exit_code=70)
    assert run_job(tmp_path, source, api, runner) == JobOutcome.FAILED
    assert "release" not in api.names()
    assert (api.args("fail")[0]["errorKind"], api.args("fail")[0]["retryable"]) == (ErrorKind.AGENT_ERROR, False)
    assert api.args("fail")[0]["error"].startswith("the sandbox refused the agent's request to run the CLI")


def test_heartbeats_carry_the_usage_of_a_running_attempt(tmp_path: Path, source: Path, claude_api):
    _, gateway = claude_api

    class CancelOnUsage(FakeApi):
        """Cancels the job once a heartbeat has carried its usage: the CLI runs until then."""

        def heartbeat(self, claim: Claim, lease_ms: int, **report: Any) -> bool:
            super().heartbeat(claim, lease_ms, **report)
            return report.get("usage") is not None

    api, runner = CancelOnUsage(), ClaudeRunner(1, result=RunResult.STOPPED)
    assert run_job(tmp_path, source, api, runner, claude=ClaudeAccess(max_retries=0, gateway=gateway)) == \
        JobOutcome.CANCELED
    used = {"inputTokens": 100, "outputTokens": 20, "cacheReadTokens": 0, "cacheCreationTokens": 0, "requests": 1}
    carried = [args["usage"] for args in api.args("heartbeat") if "usage" in args]
    assert carried and all(usage == used for usage in carried)
    assert api.args("canceled")[0]["usage"] == used
