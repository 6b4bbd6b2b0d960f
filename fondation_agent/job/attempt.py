"""One job attempt's life: check → clone → run the CLI → gather documents → report.

Status goes cloning → analyzing → gathering → completed. A `LeaseKeeper` thread renews the lease
throughout and carries status and progress to Convex; if the lease is lost, a cancel arrives or
the agent must stop now, `Job.stop` kills whatever runs (git or the CLI's whole tree) and the job
ends at its next step without writing anything more than its ending requires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from fondation_agent.config import Config
from fondation_agent.host.metrics import Metrics
from fondation_agent.job.cli_contract import (
    Progress,
    cli_argv,
    cli_environment,
    output_directories,
    remove_shipped_files,
)
from fondation_agent.job.cli_output import read_cli_line
from fondation_agent.job.failures import HOST_ERRNOS, classify_cli_failure
from fondation_agent.job.log_tail import LogTail
from fondation_agent.job.progress_watch import OutputWatcher
from fondation_agent.job.repo import (
    CloneAborted,
    CloneFailed,
    RepositoryRefused,
    check_repository,
    clone_repository,
)
from fondation_agent.job.results import InvalidOutput, OutputLimits, chunks, collect_documents, total_bytes
from fondation_agent.job.untrusted import clean_text
from fondation_agent.queue.convex_api import (
    Claim,
    ConvexUnavailable,
    FunctionError,
    InvalidArgument,
    LeaseLost,
    WorkerApi,
)
from fondation_agent.queue.rules import MAX_ERROR_LENGTH, MAX_PROGRESS_LENGTH, ErrorKind, Status, bounded
from fondation_agent.sandbox.claude_access import ClaudeAccess
from fondation_agent.sandbox.gateway.attempts import Verdict
from fondation_agent.sandbox.gateway.client import GatewayUnavailable, Registration, Report
from fondation_agent.sandbox.runner import DiskUnavailable, Limits, Outcome, Runner, RunningCli, RunResult
from fondation_agent.sandbox.workspace import Workspace, is_safe_job_id


class StopReason(StrEnum):
    """Why a job stops before its end."""

    CANCELED = "canceled"
    LEASE_LOST = "lease_lost"
    RELEASED = "released"  # the agent is stopping


class JobOutcome(StrEnum):
    """How an attempt ended: the jobs_finished_total label (docs/metrics.md)."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELED = "canceled"
    LEASE_LOST = "lease_lost"
    RELEASED = "released"
    HOST_FAILURE = "host_failure"  # released, the host's fault
    ABANDONED = "abandoned"  # Convex unreachable at the end: claimed again once the lease expires
    AGENT_ERROR = "agent_error"  # the job's thread crashed (worker.py)


class Stage(StrEnum):
    """The stages of an attempt: the stage_duration_seconds label."""

    CLONE = "clone"
    CLI = "cli"
    RESULTS = "results"
    UPLOAD = "upload"


MAX_RELAYED_LINES = 5000  # per job: a CLI flooding stdout must not flood the journal (then only new steps)
PROGRESS_BEAT_MIN_INTERVAL = 1.0
T = TypeVar("T")


class JobFailure(Exception):
    def __init__(self, message: str, kind: str, retryable: bool, *, host: bool = False):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.host = host  # this host's problem, not the job's: released, and counted towards a pause


class JobStopped(Exception):
    pass


class LeaseKeeper(threading.Thread):
    """Renews one lease every heartbeat_interval (and at each status change), carrying progress."""

    def __init__(self, job: Job, claimed_at: float):
        super().__init__(daemon=True, name=f"lease-{job.claim.job_id}")
        self.job = job
        self.last_renewed = claimed_at
        self._report: dict[str, Any] = {}
        self._urgent = False
        self._last_beat = claimed_at  # the claim itself set the lease
        self._progress_pending = False
        self._step = 0  # currentStep never goes backwards within an attempt
        self._wake = threading.Condition()
        self._done = False

    def lease_valid_locally(self) -> bool:
        """False once a lease_time has passed since Convex last renewed it: it has certainly expired."""
        return time.monotonic() - self.last_renewed < self.job.config.lease_time

    def report(self, *, status: Status | None = None, progress: Progress | None = None,
               text: str | None = None) -> bool:
        """Queues a report for the next heartbeat; with progress, True when it moves to a later step
        (progress of an earlier step than one reported is dropped)."""
        with self._wake:
            advanced = False
            if status is not None:
                self._report["status"] = status
                self._urgent = True
            if progress is not None:
                if progress.step < self._step:
                    return False
                advanced, self._step = progress.step > self._step, progress.step
                self._report.update(progress=bounded(progress.describe(), MAX_PROGRESS_LENGTH),
                                    currentStep=progress.step, totalSteps=progress.total)
                self._progress_pending = True  # sent within PROGRESS_BEAT_MIN_INTERVAL of the last beat
            elif text is not None:
                self._report["progress"] = bounded(text, MAX_PROGRESS_LENGTH)
            self._wake.notify()
            return advanced

    def finish(self) -> None:
        with self._wake:
            self._done = True
            self._wake.notify()
        self.join(timeout=5)

    def run(self) -> None:
        interval = self.job.config.heartbeat_interval
        while True:
            with self._wake:
                while not self._done and not self._urgent:
                    left = self._deadline(interval) - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(timeout=left)
                if self._done:
                    return
                report, self._report, self._urgent, self._progress_pending = self._report, {}, False, False
                self._last_beat = time.monotonic()
            logs = self.job.log_tail.take()  # the CLI's lines since the last beat ride along
            if logs:
                report["logs"] = logs
            usage = self.job.claude_usage()
            if usage is not None:
                report["usage"] = usage
            if not self._beat(report):
                return

    def _deadline(self, interval: float) -> float:
        wait = min(interval, PROGRESS_BEAT_MIN_INTERVAL) if self._progress_pending else interval
        return self._last_beat + wait

    def _beat(self, report: dict[str, Any]) -> bool:
        """One heartbeat; False when the job must stop renewing (lease lost)."""
        job = self.job
        try:
            cancel_requested = job.api.heartbeat(job.claim, job.config.lease_ms, **report)
        except LeaseLost:
            job.stop(StopReason.LEASE_LOST)
            return False
        except InvalidArgument as error:
            # Convex refused what we reported: sending it again would be refused again until the
            # lease ran out. Renew the lease now with nothing but itself.
            job.log.error("heartbeat refused; its report is dropped", error=str(error), report=sorted(report))
            with self._wake:
                self._urgent = True
            return True
        except (ConvexUnavailable, FunctionError) as error:
            with self._wake:  # resend what did not arrive, and try again soon
                self.job.log_tail.put_back(report.pop("logs", []))
                self._report = {**report, **self._report}
                self._last_beat -= job.config.heartbeat_interval * 2 / 3
            if not self.lease_valid_locally():
                job.log.warning("lease expired while Convex was unreachable", error=str(error))
                job.stop(StopReason.LEASE_LOST)
                return False
            job.log.warning("heartbeat failed; retrying", error=str(error))
            return True
        self.last_renewed = time.monotonic()
        job.metrics.lease_renewals.inc()
        if cancel_requested:
            job.stop(StopReason.CANCELED)
        return True


class Job:
    def __init__(
        self,
        claim: Claim,
        *,
        config: Config,
        api: WorkerApi,
        runner: Runner,
        metrics: Metrics,
        log: Any,
        claimed_at: float,
        git_token: str | None = None,
        claude: ClaudeAccess | None = None,
    ):
        self.claim = claim
        self.claude = claude
        self.config = config
        self.api = api
        self.runner = runner
        self.metrics = metrics
        self.git_token = git_token
        self.log = log.bind(job_id=claim.job_id, attempt=claim.attempt)
        self.claimed_at = claimed_at
        self.log_tail = LogTail()  # the CLI's lines for the platform's live logs
        self.keeper = LeaseKeeper(self, claimed_at)
        self.stop_reason: StopReason | None = None
        self._lock = threading.Lock()
        self._cli: RunningCli | None = None
        self._relayed_lines = 0
        self._cli_words_progress = False  # the CLI printed progress: the watcher's wording stays out
        self._last_cli_error: str | None = None  # the CLI's last error-level log line
        self.host_failure: JobFailure | None = None
        self.status = Status.RUNNING
        self._claude_attempt: Registration | None = None  # the attempt's gateway token, while the CLI may run
        self.claude_report: Report | None = None  # its usage and verdict, as last read from the gateway

    # ---- control from other threads -------------------------------------------------------------

    def stop(self, reason: StopReason) -> None:
        """Stops the job as soon as possible; the first reason given is the one that counts."""
        with self._lock:
            if self.stop_reason is not None:
                return
            self.stop_reason = reason
            cli = self._cli
        self.log.info("stopping job", reason=reason)
        if cli is not None:
            cli.stop()

    # ---- the job's own thread -------------------------------------------------------------------

    def run(self) -> JobOutcome:
        """Runs the attempt to its end and returns the outcome (a jobs_finished_total label)."""
        self.keeper.start()
        self._workspace: Workspace | None = None
        try:
            outcome = self._attempt()
        except LeaseLost:
            outcome = JobOutcome.LEASE_LOST
        except ConvexUnavailable as error:
            self.log.error("Convex unreachable at the end of the job; it will be claimed again", error=str(error))
            outcome = JobOutcome.ABANDONED
        finally:
            self.keeper.finish()
            if self._workspace is not None:
                self._workspace.remove()
        if outcome == JobOutcome.LEASE_LOST:
            self.metrics.lease_losses.inc()
        self.log.info("job ended", outcome=outcome, seconds=round(time.monotonic() - self.claimed_at, 3))
        return outcome

    def _attempt(self) -> JobOutcome:
        try:
            if not is_safe_job_id(self.claim.job_id):
                shown = clean_text(self.claim.job_id, 100)
                raise JobFailure(f"job id '{shown}' is not a plain identifier", ErrorKind.INVALID_JOB, False)
            source = self._check_repository()
            self._workspace = Workspace(Path(self.config.temp_dir), self.claim.job_id, self.claim.attempt,
                                        runner=self.runner, disk_max=self.config.disk_max)
            try:
                workspace = self._workspace.create(self.config.worker_id)
            except DiskUnavailable as error:
                raise JobFailure(f"no disk for the job: {error}", ErrorKind.HOST_ERROR, True, host=True) from None
            return self._run_stages(source, workspace)
        except JobStopped:
            return self._end_stopped()
        except JobFailure as failure:
            return self._end_failed(failure)
        except (LeaseLost, ConvexUnavailable):
            raise
        except Exception as error:  # a bug of ours must not kill the worker or lose the job
            if isinstance(error, OSError) and error.errno in HOST_ERRNOS:  # a full disk, no memory
                return self._end_failed(JobFailure(f"host problem: {error}", ErrorKind.HOST_ERROR, True, host=True))
            self.log.exception("internal error in the agent")
            detail = clean_text(f"{type(error).__name__}: {error}", 500)
            return self._end_failed(JobFailure(f"internal agent error: {detail}", ErrorKind.AGENT_ERROR, True))

    def _check_repository(self):
        job = self.claim.job
        try:
            return check_repository(
                job["repositoryUrl"],
                job.get("branch"),
                allowed_hosts=self.config.allowed_hosts,
                allow_local=self.config.allow_local_repositories,
            )
        except RepositoryRefused as refused:
            raise JobFailure(str(refused), ErrorKind.REPOSITORY_REFUSED, False) from None

    def _run_stages(self, source, workspace: Workspace) -> JobOutcome:
        self.log = self.log.bind(repository=source.display)
        self._enter(Status.CLONING, f"Cloning {source.display}")
        with self._stage(Stage.CLONE):
            commit = self._clone(source, workspace)
        removed = remove_shipped_files(workspace.repo)
        if removed:
            self.log.info("removed from the clone before the CLI runs", paths=removed)

        self._enter(Status.ANALYZING, "Running the course generator")
        with self._stage(Stage.CLI):
            outcome = self._run_cli(workspace)
        if outcome.result == RunResult.STOPPED:
            raise JobStopped
        if outcome.result != RunResult.SUCCESS:
            raise self._cli_failure(outcome, workspace)

        self._enter(Status.GATHERING, "Collecting the documents")
        with self._stage(Stage.RESULTS):
            documents = self._collect(workspace)
        with self._stage(Stage.UPLOAD):
            for chunk in chunks(documents):
                self._check_stop()
                try:
                    self._reliably(lambda chunk=chunk: self.api.save_docs(self.claim, chunk))
                except InvalidArgument as refused:  # a check of ours missed it: still the output's fault
                    raise JobFailure(f"invalid CLI output: Convex refused it: {refused}", ErrorKind.INVALID_OUTPUT,
                                     False) from None
        self._check_stop()
        summary = {"documents": len(documents), "bytes": total_bytes(documents), "commit": commit,
                   "worker": self.config.worker_id, "attempt": self.claim.attempt}
        self._finally(self.api.complete, summary)
        return JobOutcome.COMPLETED

    def _clone(self, source, workspace: Workspace) -> str:
        try:
            return clone_repository(
                source,
                workspace.repo,
                timeout=self.config.clone_timeout,
                max_bytes=self.config.clone_max_bytes,
                max_files=self.config.clone_max_files,
                token=self.git_token,
                token_owners=self.config.git_token_owners,
                should_stop=lambda: self.stop_reason is not None,
            )
        except CloneAborted:
            raise JobStopped from None
        except CloneFailed as failure:
            if failure.kind == ErrorKind.HOST_ERROR:
                raise JobFailure(f"host problem: {failure}", ErrorKind.HOST_ERROR, True, host=True) from None
            raise JobFailure(str(failure), failure.kind, failure.retryable) from None

    def _limits(self) -> Limits:
        c = self.config
        return Limits(c.job_timeout, c.kill_grace, c.memory_max, c.cpu_quota, c.tasks_max)

    def _run_cli(self, workspace: Workspace) -> Outcome:
        job_id = self.claim.job_id
        argv = cli_argv(self.config.cli_argv_template, repo=workspace.repo, output=workspace.output,
                        prompt=self.claim.job.get("prompt", ""), job_id=job_id)
        unit = f"fondation-job-{job_id}-{self.claim.attempt}"
        try:
            return self._run_cli_with_claude(workspace, argv, unit)
        finally:
            self._end_claude()

    def _run_cli_with_claude(self, workspace: Workspace, argv: list[str], unit: str) -> Outcome:
        job_id = self.claim.job_id
        claude_env = self.claude.job_environment(self._start_claude(self.claude)) if self.claude else {}
        env = cli_environment(output=workspace.output, job_id=job_id, extra={**self.config.cli_env, **claude_env})
        with self._lock:
            if self.stop_reason is not None:
                raise JobStopped
            try:
                self._cli = self.runner.start(argv, env=env, cwd=workspace.repo, unit=unit, limits=self._limits())
            except OSError as error:  # the CLI (or the sandbox's launcher) is missing or not executable
                raise JobFailure(f"the CLI cannot be started: {error}", ErrorKind.HOST_ERROR, True, host=True) from None
        self.log.info("CLI started", pid=getattr(self._cli, "pid", None), unit=unit, sandbox=self.runner.name)
        relay = threading.Thread(target=self._relay_output, args=(self._cli,), daemon=True, name=f"relay-{job_id}")
        relay.start()
        watcher = OutputWatcher(output_directories(workspace.output, workspace.repo), self._watched_progress,
                                name=f"watch-{job_id}")
        watcher.start()
        outcome = self._cli.wait()
        watcher.stop()
        relay.join(timeout=5)
        with self._lock:
            self._cli = None
        self.log.info("CLI ended", result=outcome.result, exit_code=outcome.exit_code)
        return outcome

    def _start_claude(self, claude: ClaudeAccess) -> Registration | None:
        """The attempt's token at the Claude gateway (a gateway out of reach is the host's problem)."""
        longest = self.config.job_timeout + self.config.kill_grace
        try:
            registration = claude.register(self.claim.job_id, self.claim.attempt, longest)
        except GatewayUnavailable as error:
            raise JobFailure(f"host problem: {error}", ErrorKind.HOST_ERROR, True, host=True) from None
        with self._lock:
            self._claude_attempt = registration
        return registration

    def _end_claude(self) -> None:
        """Revokes the attempt's token (the CLI has ended) and keeps its final usage and verdict."""
        with self._lock:
            registration, self._claude_attempt = self._claude_attempt, None
        if registration is None or self.claude is None:
            return
        try:
            report = self.claude.end(registration)
        except GatewayUnavailable as error:
            self.log.warning("cannot end the attempt at the Claude gateway; its token expires on its own",
                             error=str(error))
            return
        if report is None:
            return
        with self._lock:
            self.claude_report = report
        used = report.usage
        self.metrics.observe_claude_usage({"input": used.input_tokens, "output": used.output_tokens,
                                           "cache_read": used.cache_read_tokens,
                                           "cache_creation": used.cache_creation_tokens}, used.requests)
        self.log.info("Claude usage", requests=report.usage.requests, used_input=report.usage.input_tokens,
                      used_output=report.usage.output_tokens, verdict=report.verdict)

    def claude_usage(self) -> dict[str, int] | None:
        """The attempt's Claude usage so far, for Convex (None before its first request)."""
        with self._lock:
            registration = self._claude_attempt
        if registration is not None and self.claude is not None:
            try:
                report = self.claude.read(registration)
            except GatewayUnavailable as error:
                self.log.warning("cannot read the attempt's Claude usage", error=str(error))
                report = None
            with self._lock:  # a read that raced the attempt's end must not replace its final report
                if report is not None and self._claude_attempt is registration:
                    self.claude_report = report
        report = self.claude_report
        return report.usage.to_json() if report is not None and report.usage.requests else None

    def _watched_progress(self, progress: Progress) -> None:
        """The output directory's progress counts only for a silent CLI: one that prints its progress
        keeps its own wording rather than alternating with the watcher's."""
        if not self._cli_words_progress:
            self.keeper.report(progress=progress)

    def _relay_output(self, cli: RunningCli) -> None:
        """Carries the CLI's stdout into the journal (with the job's id, at the level the CLI logged
        it), into the job's live logs (bounded by the tail) and its progress to Convex. Past
        MAX_RELAYED_LINES only lines that reach a new step are relayed, so at most MAX_STEP more."""
        for raw in cli.stdout_lines():
            self.metrics.cli_lines.inc()
            line = read_cli_line(raw)
            self._cli_words_progress |= line.progress is not None
            self.log_tail.add(line.level, line.text)
            advanced = line.progress is not None and self.keeper.report(progress=line.progress)
            if line.error:
                self._last_cli_error = line.error
            self._relayed_lines += 1
            if advanced or self._relayed_lines <= MAX_RELAYED_LINES:
                getattr(self.log, line.level)(line.text, stream="stdout")
            elif self._relayed_lines == MAX_RELAYED_LINES + 1:
                self.log.warning(f"more than {MAX_RELAYED_LINES} lines of CLI output; only new steps follow")

    def _cli_failure(self, outcome: Outcome, workspace: Workspace) -> JobFailure:
        """The failure of a CLI that did not succeed: a disk it filled (a fact of its own file system),
        else its message from stderr or, when that says nothing, from its last error-level log line
        (the real CLI logs its failures on stdout)."""
        if workspace.disk_full():
            return JobFailure(f"the job filled its disk ({self.config.disk_max} bytes, disk_max) and failed",
                              ErrorKind.DISK_LIMIT, False)
        said = clean_text(outcome.stderr_tail[-1500:], 1500) or self._last_cli_error or ""
        verdict = self.claude_report.verdict if self.claude_report is not None else None
        classified = classify_cli_failure(outcome.result, verdict)
        message = outcome.describe(self._limits()) + (f": {said}" if said else "")
        if verdict == Verdict.BUDGET_EXCEEDED:
            used = self.claude_report.usage.budget_tokens()
            message = (f"the job needed more of Claude than a job may use: {used} tokens read and written, "
                       f"over the limit of {self.config.claude_max_tokens} (claude_max_tokens); it is not retried")
        elif verdict is not None and classified.kind != ErrorKind.AGENT_ERROR:
            message = f"the Anthropic API refused the job's requests ({verdict}); {message}"
        return JobFailure(message, classified.kind, classified.retryable, host=classified.host)

    def _collect(self, workspace: Workspace):
        c = self.config
        try:
            return collect_documents(
                output_directories(workspace.output, workspace.repo),
                OutputLimits(c.max_doc_bytes, c.max_docs, c.max_output_bytes),
            )
        except InvalidOutput as invalid:
            raise JobFailure(f"invalid CLI output: {invalid}", ErrorKind.INVALID_OUTPUT, False) from None

    # ---- helpers --------------------------------------------------------------------------------

    def _enter(self, status: Status, text: str) -> None:
        self._check_stop()
        self.status = status
        self.log.info("stage", status=status)
        self.keeper.report(status=status, text=text)

    @contextmanager
    def _stage(self, name: Stage):
        started = time.monotonic()
        try:
            yield
        finally:
            self.metrics.stage_duration.labels(name).observe(time.monotonic() - started)
        self._check_stop()

    def _check_stop(self) -> None:
        if self.stop_reason is not None:
            raise JobStopped

    def _reliably(self, call: Callable[[], T]) -> T:
        """Repeats a call Convex did not answer while our lease can still be valid."""
        while True:
            if self.stop_reason == StopReason.LEASE_LOST:
                raise LeaseLost("lease lost")
            try:
                return call()
            except ConvexUnavailable as error:
                if not self.keeper.lease_valid_locally():
                    raise LeaseLost("lease expired while Convex was unreachable") from error
                self.log.warning("Convex unreachable; retrying", error=str(error))
                time.sleep(1.0)

    def _finally(self, end: Callable[..., T], *args: Any) -> T:
        """The attempt's last call (complete, fail, release, canceled): heartbeats stop first, so
        none can reach Convex after the job has ended and be answered lease_lost; it carries the
        CLI's lines no heartbeat did, so the live logs end with the CLI's last words."""
        self.keeper.finish()
        logs = self.log_tail.take()
        usage = self.claude_usage()
        return self._reliably(lambda: end(self.claim, *args, logs=logs, usage=usage))

    def _end_stopped(self) -> JobOutcome:
        reason = self.stop_reason or StopReason.LEASE_LOST
        if reason == StopReason.CANCELED:
            self._finally(self.api.canceled)
        elif reason == StopReason.RELEASED:
            self._finally(self.api.release, f"agent {self.config.worker_id} is stopping")
        return JobOutcome(reason.value)  # each stop reason is also the outcome of its name

    def _end_failed(self, failure: JobFailure) -> JobOutcome:
        if self.stop_reason is not None:
            return self._end_stopped()
        if failure.host:
            # Not the job's fault: hand it back uncounted, for a healthy host to run.
            self.log.error("host problem; job released", error=str(failure), error_kind=failure.kind)
            self.host_failure = failure
            reason = f"host problem on {self.config.worker_id} ({failure.kind}): {failure}"
            reason = bounded(reason, MAX_PROGRESS_LENGTH)
            result = self._finally(self.api.release, reason, failure.kind)
            if result.get("failed"):
                self.log.error("job failed: released for host problems too many times", error_kind=failure.kind)
            return JobOutcome.HOST_FAILURE
        self.log.warning("job failed", error=str(failure), error_kind=failure.kind, retryable=failure.retryable)
        error = bounded(str(failure), MAX_ERROR_LENGTH)
        result = self._finally(self.api.fail, error, failure.kind, failure.retryable)
        return JobOutcome.RETRYING if result.get("willRetry") else JobOutcome.FAILED
