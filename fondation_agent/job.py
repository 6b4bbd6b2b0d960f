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
from pathlib import Path
from typing import Any, TypeVar

from fondation_agent.config import Config
from fondation_agent.contract import Progress, cli_argv, cli_environment, parse_progress
from fondation_agent.convex_api import Claim, ConvexUnavailable, FunctionError, LeaseLost, WorkerApi
from fondation_agent.metrics import Metrics
from fondation_agent.repo import (
    CloneAborted,
    CloneFailed,
    RepositoryRefused,
    check_repository,
    clone_repository,
)
from fondation_agent.results import (
    SEED_OUTPUT_DIR,
    InvalidOutput,
    chunks,
    collect_documents,
    remove_shipped_output,
    total_bytes,
)
from fondation_agent.results import (
    Limits as ResultLimits,
)
from fondation_agent.sandbox import Limits, Outcome
from fondation_agent.workspace import Workspace, is_safe_job_id

# Why a job stops before its end.
CANCELED = "canceled"
LEASE_LOST = "lease_lost"
RELEASED = "released"

# How a CLI outcome becomes a failure: (errorKind, retryable).
CLI_FAILURES = {
    "exit-code": ("cli_failed", True),
    "signal": ("crashed", True),
    "timeout": ("timeout", True),
    "oom-kill": ("oom", False),  # the same limits would kill it again
}
MAX_RELAYED_LINES = 5000  # per job: a CLI flooding stdout must not flood the journal
PROGRESS_BEAT_MIN_INTERVAL = 1.0
T = TypeVar("T")


class JobFailure(Exception):
    def __init__(self, message: str, kind: str, retryable: bool):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


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
        self._wake = threading.Condition()
        self._done = False

    def lease_valid_locally(self) -> bool:
        """False once a lease_time has passed since Convex last renewed it: it has certainly expired."""
        return time.monotonic() - self.last_renewed < self.job.config.lease_time

    def report(self, *, status: str | None = None, progress: Progress | None = None, text: str | None = None) -> None:
        with self._wake:
            if status is not None:
                self._report["status"] = status
                self._urgent = True
            if progress is not None:
                self._report.update(progress=progress.describe(), currentStep=progress.step, totalSteps=progress.total)
                self._urgent = self._urgent or time.monotonic() - self._last_beat >= PROGRESS_BEAT_MIN_INTERVAL
            elif text is not None:
                self._report["progress"] = text
            self._wake.notify()

    def finish(self) -> None:
        with self._wake:
            self._done = True
            self._wake.notify()
        self.join(timeout=5)

    def run(self) -> None:
        interval = self.job.config.heartbeat_interval
        while True:
            with self._wake:
                deadline = self._last_beat + interval
                while not self._done and not self._urgent and time.monotonic() < deadline:
                    self._wake.wait(timeout=max(0.0, deadline - time.monotonic()))
                if self._done:
                    return
                report, self._report, self._urgent = self._report, {}, False
                self._last_beat = time.monotonic()
            if not self._beat(report):
                return

    def _beat(self, report: dict[str, Any]) -> bool:
        """One heartbeat; False when the job must stop renewing (lease lost)."""
        job = self.job
        try:
            cancel_requested = job.api.heartbeat(job.claim, job.config.lease_ms, **report)
        except LeaseLost:
            job.stop(LEASE_LOST)
            return False
        except (ConvexUnavailable, FunctionError) as error:
            with self._wake:  # resend what did not arrive, and try again soon
                self._report = {**report, **self._report}
                self._last_beat -= job.config.heartbeat_interval * 2 / 3
            if not self.lease_valid_locally():
                job.log.warning("lease expired while Convex was unreachable", error=str(error))
                job.stop(LEASE_LOST)
                return False
            job.log.warning("heartbeat failed; retrying", error=str(error))
            return True
        self.last_renewed = time.monotonic()
        job.metrics.lease_renewals.inc()
        if cancel_requested:
            job.stop(CANCELED)
        return True


class Job:
    def __init__(
        self,
        claim: Claim,
        *,
        config: Config,
        api: WorkerApi,
        runner: Any,
        metrics: Metrics,
        log: Any,
        claimed_at: float,
        git_token: str | None = None,
    ):
        self.claim = claim
        self.config = config
        self.api = api
        self.runner = runner
        self.metrics = metrics
        self.git_token = git_token
        self.log = log.bind(job_id=claim.job_id, attempt=claim.attempt)
        self.claimed_at = claimed_at
        self.keeper = LeaseKeeper(self, claimed_at)
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._cli: Any = None
        self._relayed_lines = 0
        self.status = "running"

    # ---- control from other threads -------------------------------------------------------------

    def stop(self, reason: str) -> None:
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

    def run(self) -> str:
        """Runs the attempt to its end and returns the outcome (a jobs_finished_total label)."""
        self.keeper.start()
        self._workspace: Workspace | None = None
        try:
            outcome = self._attempt()
        except LeaseLost:
            outcome = LEASE_LOST
        except ConvexUnavailable as error:
            self.log.error("Convex unreachable at the end of the job; it will be claimed again", error=str(error))
            outcome = "abandoned"
        finally:
            self.keeper.finish()
            if self._workspace is not None:
                self._workspace.remove()
        if outcome == LEASE_LOST:
            self.metrics.lease_losses.inc()
        self.log.info("job ended", outcome=outcome, seconds=round(time.monotonic() - self.claimed_at, 3))
        return outcome

    def _attempt(self) -> str:
        try:
            if not is_safe_job_id(self.claim.job_id):
                raise JobFailure(f"job id {self.claim.job_id!r} is not a plain identifier", "invalid_job", False)
            source = self._check_repository()
            self._workspace = Workspace(Path(self.config.temp_dir), self.claim.job_id, self.claim.attempt)
            return self._run_stages(source, self._workspace.create(self.config.worker_id))
        except JobStopped:
            return self._end_stopped()
        except JobFailure as failure:
            return self._end_failed(failure)
        except (LeaseLost, ConvexUnavailable):
            raise
        except Exception as error:  # a bug of ours must not kill the worker or lose the job
            self.log.exception("internal error in the agent")
            return self._end_failed(JobFailure(f"internal agent error: {error!r}", "agent_error", True))

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
            raise JobFailure(str(refused), "repository_refused", False) from None

    def _run_stages(self, source, workspace: Workspace) -> str:
        self.log = self.log.bind(repository=source.display)
        self._enter("cloning", f"Cloning {source.display}")
        with self._stage("clone"):
            commit = self._clone(source, workspace)
        remove_shipped_output(workspace.repo)

        self._enter("analyzing", "Running the course generator")
        with self._stage("cli"):
            outcome = self._run_cli(workspace)
        if outcome.result == "stopped":
            raise JobStopped
        if outcome.result != "success":
            kind, retryable = CLI_FAILURES[outcome.result]
            detail = f": {outcome.stderr_tail[-1500:]}" if outcome.stderr_tail else ""
            raise JobFailure(outcome.describe(self._limits()) + detail, kind, retryable)

        self._enter("gathering", "Collecting the documents")
        with self._stage("results"):
            documents = self._collect(workspace)
        with self._stage("upload"):
            for chunk in chunks(documents):
                self._check_stop()
                self._reliably(lambda chunk=chunk: self.api.save_docs(self.claim, chunk))
        self._check_stop()
        summary = {"documents": len(documents), "bytes": total_bytes(documents), "commit": commit,
                   "worker": self.config.worker_id, "attempt": self.claim.attempt}
        self._finally(lambda: self.api.complete(self.claim, summary))
        return "completed"

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
            raise JobFailure(str(failure), failure.kind, failure.retryable) from None

    def _limits(self) -> Limits:
        c = self.config
        return Limits(c.job_timeout, c.kill_grace, c.memory_max, c.cpu_quota, c.tasks_max)

    def _run_cli(self, workspace: Workspace) -> Outcome:
        job_id = self.claim.job_id
        argv = cli_argv(self.config.cli_argv_template, repo=workspace.repo, output=workspace.output,
                        prompt=self.claim.job.get("prompt", ""), job_id=job_id)
        env = cli_environment(output=workspace.output, job_id=job_id, extra=self.config.cli_env)
        unit = f"fondation-job-{job_id}-{self.claim.attempt}"
        with self._lock:
            if self.stop_reason is not None:
                raise JobStopped
            self._cli = self.runner.start(argv, env=env, cwd=workspace.repo, unit=unit, limits=self._limits())
        self.log.info("CLI started", pid=getattr(self._cli, "pid", None), unit=unit, sandbox=self.runner.name)
        relay = threading.Thread(target=self._relay_output, args=(self._cli,), daemon=True, name=f"relay-{job_id}")
        relay.start()
        outcome = self._cli.wait()
        relay.join(timeout=5)
        with self._lock:
            self._cli = None
        self.log.info("CLI ended", result=outcome.result, exit_code=outcome.exit_code)
        return outcome

    def _relay_output(self, cli: Any) -> None:
        """Carries the CLI's stdout into the journal (with the job's id) and its progress to Convex."""
        for line in cli.stdout_lines():
            self.metrics.cli_lines.inc()
            progress = parse_progress(line)
            if progress is not None:
                self.keeper.report(progress=progress)
            self._relayed_lines += 1
            if progress is not None or self._relayed_lines <= MAX_RELAYED_LINES:
                self.log.info(line[:2000], stream="stdout")
            elif self._relayed_lines == MAX_RELAYED_LINES + 1:
                self.log.warning(f"more than {MAX_RELAYED_LINES} lines of CLI output; only progress lines follow")

    def _collect(self, workspace: Workspace):
        c = self.config
        try:
            return collect_documents(
                [workspace.output, workspace.repo / SEED_OUTPUT_DIR],
                ResultLimits(c.max_doc_bytes, c.max_docs, c.max_output_bytes),
            )
        except InvalidOutput as invalid:
            raise JobFailure(f"invalid CLI output: {invalid}", "invalid_output", False) from None

    # ---- helpers --------------------------------------------------------------------------------

    def _enter(self, status: str, text: str) -> None:
        self._check_stop()
        self.status = status
        self.log.info("stage", status=status)
        self.keeper.report(status=status, text=text)

    @contextmanager
    def _stage(self, name: str):
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
            if self.stop_reason == LEASE_LOST:
                raise LeaseLost("lease lost")
            try:
                return call()
            except ConvexUnavailable as error:
                if not self.keeper.lease_valid_locally():
                    raise LeaseLost("lease expired while Convex was unreachable") from error
                self.log.warning("Convex unreachable; retrying", error=str(error))
                time.sleep(1.0)

    def _finally(self, call: Callable[[], T]) -> T:
        """The attempt's last call (complete, fail, release, canceled): heartbeats stop first, so
        none can reach Convex after the job has ended and be answered lease_lost."""
        self.keeper.finish()
        return self._reliably(call)

    def _end_stopped(self) -> str:
        reason = self.stop_reason
        if reason == CANCELED:
            self._finally(lambda: self.api.canceled(self.claim))
        elif reason == RELEASED:
            self._finally(lambda: self.api.release(self.claim, f"agent {self.config.worker_id} is stopping"))
        return reason or LEASE_LOST

    def _end_failed(self, failure: JobFailure) -> str:
        if self.stop_reason is not None:
            return self._end_stopped()
        self.log.warning("job failed", error=str(failure), error_kind=failure.kind, retryable=failure.retryable)
        result = self._finally(lambda: self.api.fail(self.claim, str(failure), failure.kind, failure.retryable))
        return "retrying" if result.get("willRetry") else "failed"
