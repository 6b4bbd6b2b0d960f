"""The worker loop: claim jobs into free slots, keep the process healthy, drain on stop.

The main thread owns the loop and is the only one that claims, talks to systemd and handles
signals (handlers only set flags and wake the loop through the wakeup fd). Each job runs in its
own thread (job.py), with its own lease keeper.

Signals: SIGTERM (or SIGINT) drains — stop claiming, let running jobs finish within
drain_timeout, then release the rest; a second one releases everything at once; SIGHUP reloads
the config (concurrency, intervals, limits) for the jobs that start afterwards.

Before its first claim, and again after each reload, the agent runs its preflight (job/preflight.py)
on a thread of its own, so that the loop keeps telling systemd it is alive while the CLI's version
command runs: a host that cannot run a job claims nothing and pauses (kind `preflight`) until it passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from fondation_agent import __version__
from fondation_agent.config import Config, ConfigError, load_config
from fondation_agent.host.logs import configure_logging, get_logger
from fondation_agent.host.metrics import BIND_RETRY, Metrics, MetricsEndpoint
from fondation_agent.host.notify import Notifier, systemd_restarts
from fondation_agent.host.pause import HostPause
from fondation_agent.job import preflight
from fondation_agent.job.attempt import Job, JobOutcome, StopReason
from fondation_agent.job.failures import PAUSE_AT_ONCE
from fondation_agent.queue.claim_schedule import ClaimSchedule
from fondation_agent.queue.convex_api import ConvexApiError, ConvexHttp, ConvexUnavailable, FunctionError, WorkerApi
from fondation_agent.queue.wake import UP, WakeSubscription
from fondation_agent.sandbox.claude_access import ClaudeAccess
from fondation_agent.sandbox.gateway.credentials import CredentialsError
from fondation_agent.sandbox.process_runner import ProcessRunner
from fondation_agent.sandbox.runner import Runner, SandboxUnusable
from fondation_agent.sandbox.workspace import remove_leftover_workspaces

# Settings a reload cannot change: they shape connections and files the running process holds.
RESTART_ONLY = (
    "convex_url", "worker_id", "worker_token_file", "metrics_address", "temp_dir", "log_format", "sandbox", "wake",
    # Read once, at start (claude_access.py): the in-process gateway, or the gateway service's socket.
    "claude_credentials_file", "claude_upstream", "claude_max_retries", "claude_max_tokens", "gateway_control_socket",
)
LOOP_TICK = 1.0
# Every agent exports the queue's depth; reading it more often would only load Convex.
QUEUE_DEPTH_INTERVAL = 30.0
# Tests (and the VM tier) can make the main loop hang to prove the watchdog restarts the agent.
HANG_SWITCH_ENV = "FONDATION_AGENT_TEST_HANG_FILE"
METRICS_FD_NAME = "metrics"  # the metrics socket in systemd's file descriptor store


def make_runner(config: Config) -> Runner:
    if config.sandbox == "systemd-service":
        from fondation_agent.sandbox.service_runner import SystemdServiceRunner

        try:
            return SystemdServiceRunner(config)
        except SandboxUnusable as error:
            raise ConfigError([str(error)]) from None
    # A dot-directory of this worker's own: not a workspace, so workspace clean-up leaves it alone.
    return ProcessRunner(Path(config.temp_dir) / f".process-groups-{config.worker_id}")


class PreflightCheck(NamedTuple):
    """The running preflight: the reload it belongs to (a verdict from before a reload is stale), its
    verdict to come and what stops its job."""

    reload: int
    verdict: Future[str]
    stopper: preflight.Stopper


class Worker:
    def __init__(self, config: Config, config_path: Path | None, *, worker_token: str, git_token: str | None = None,
                 claude: ClaudeAccess | None = None, metrics_bind_retry: tuple[float, float] = BIND_RETRY):
        self.config = config
        self.config_path = config_path
        self.log = get_logger()
        self.metrics = Metrics(config.worker_id)
        self.metrics.slots_total.set(config.concurrency)
        self.notifier = Notifier()
        self.http = ConvexHttp(config.convex_url, read_timeout=config.convex_timeout, observer=self._observe_call)
        self.api = WorkerApi(self.http, worker_token, config.worker_id)
        self.git_token = git_token
        # Without one (tests that run no CLI): Claude Code's settings, no gateway.
        self.claude = claude or ClaudeAccess(max_retries=config.claude_max_retries)
        self.runner = make_runner(config)
        self.jobs: dict[str, tuple[Job, threading.Thread]] = {}
        self.jobs_lock = threading.Lock()
        self.counts = {"completed": 0, "failed": 0, "other": 0}
        self.host_pause = HostPause(*_pause_settings(config))
        self.was_paused = False
        self.preflight_passed = False  # until it passes (again after each reload), nothing is claimed
        self.preflight_runs = 0
        self.preflight_check: PreflightCheck | None = None
        self.preflight_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight")
        self.reloads = 0
        self.cli_version: str | None = None
        # Why the last preflight failed, until one passes: a pause's end is no proof the host is fixed.
        self.preflight_failure: str | None = None
        # Loop state (main thread only, but flags are set by signal handlers).
        self.draining = False
        self.release_now = False
        self.reload_requested = False
        self.next_depth_read = 0.0
        self.last_tick = time.monotonic()
        self.last_convex_ok = 0.0
        self.convex_reachable: bool | None = None  # None until the first call
        self.last_status = ""
        self.metrics_bind_retry = metrics_bind_retry
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._wakeup_read, self._wakeup_write = os.pipe()
        for fd in (self._wakeup_read, self._wakeup_write):
            os.set_blocking(fd, False)
        self.wake = (
            WakeSubscription(config.convex_url, worker_token, self._subscription_changed, self.log, self.metrics,
                             on_depth=self.metrics.set_queue_depth)
            if config.wake == "subscription"
            else None
        )
        self.schedule = ClaimSchedule(config, self.wake)

    # ---- observability ----------------------------------------------------------------------

    def _observe_call(self, function: str, seconds: float, outcome: str) -> None:
        self.metrics.observe_convex_call(function, seconds, outcome)
        self.convex_reachable = outcome != "unavailable"
        if outcome == "unavailable" and self.wake is not None:
            self.wake.convex_unreachable()
        if outcome == "ok":
            self.last_convex_ok = time.monotonic()

    def health(self) -> tuple[bool, dict]:
        now = time.monotonic()
        loop_age = now - self.last_tick
        convex_age = now - self.last_convex_ok if self.last_convex_ok else None
        loop_alive = loop_age < max(10.0, 3 * LOOP_TICK)
        # Silence, not the last call's outcome: one dropped keep-alive connection is no outage.
        # An idle agent on its subscription calls little: the subscription being up counts as an answer
        # (it is taken down as soon as a call finds Convex unreachable).
        subscription = None if self.wake is None else self.wake.current().state
        convex_ok = (convex_age is not None and convex_age < self.config.health_max_silence) or subscription == UP
        paused = self.host_pause.describe() or self._preflight_problem()
        with self.jobs_lock:
            running = sorted(self.jobs)
        healthy = loop_alive and convex_ok and not paused
        reason = "main loop stalled" if not loop_alive else "Convex silent" if not convex_ok else paused or None
        body = {
            "status": "ok" if healthy else "unhealthy",
            "reason": reason,
            "worker_id": self.config.worker_id,
            "version": __version__,
            "cli_version": self.cli_version,
            "loop_age_seconds": round(loop_age, 3),
            "convex_reachable": self.convex_reachable,
            "convex_last_ok_seconds_ago": None if convex_age is None else round(convex_age, 3),
            "slots_busy": len(running),
            "slots_total": self.config.concurrency,
            "jobs": running,
            "draining": self.draining,
            "paused_seconds_left": round(self.host_pause.paused_for(), 1),
            "wake": self.config.wake,
            "wake_subscription": subscription,
        }
        return healthy, body

    def _preflight_problem(self) -> str:
        """The failed preflight's reason between its pause's end and the rerun's verdict, or ""."""
        return f"the last preflight failed, rerunning it: {self.preflight_failure}" if self.preflight_failure else ""

    def _status_line(self) -> str:
        with self.jobs_lock:
            running = ", ".join(f"{job_id} ({job.status})" for job_id, (job, _) in sorted(self.jobs.items()))
            busy = len(self.jobs)
        paused = self.host_pause.describe() or self._preflight_problem()
        state = "draining; " if self.draining else ("Convex unreachable; " if self.convex_reachable is False else "")
        state += f"{paused}; " if paused else ""
        no_metrics = self.metrics_endpoint and self.metrics_endpoint.problem
        state += f"{no_metrics}; " if no_metrics else ""
        return (
            f"{state}{busy}/{self.config.concurrency} slots busy"
            + (f": {running}" if running else "")
            + f"; {self.counts['completed']} completed, {self.counts['failed']} failed"
        )

    # ---- signals --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int, _frame) -> None:
        if self.draining:
            self.release_now = True
        self.draining = True

    def _on_reload_signal(self, signum: int, _frame) -> None:
        self.reload_requested = True

    def _subscription_changed(self) -> None:
        # Only a loop that can claim needs to turn now: a full or paused one reads the value when it
        # can claim again (turns it does not need would each cost a watchdog message, too).
        if self._can_claim():
            self._wake()

    def _can_claim(self) -> bool:
        """A slot is free, the preflight passed, and neither a drain nor a pause for host problems forbids claiming."""
        return (self.preflight_passed and not self.draining and len(self.jobs) < self.config.concurrency
                and not self.host_pause.paused_for())

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe means the loop is awake already
            os.write(self._wakeup_write, b"\0")

    def _sleep(self, seconds: float) -> None:
        readable, _, _ = select.select([self._wakeup_read], [], [], max(0.0, seconds))
        if readable:
            try:
                while os.read(self._wakeup_read, 4096):
                    pass
            except BlockingIOError:
                pass

    # ---- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        self._start_up()
        try:
            while self._tick():
                pass
            self._drain()
        finally:
            self._shut_down()
        return 0

    def _start_up(self) -> None:
        config = self.config
        # CLIs first, so that none is still writing into a workspace being removed.
        stopped = self.runner.cleanup_leftovers()
        if stopped:
            self.log.info("stopped leftover jobs", units=stopped)
        removed = remove_leftover_workspaces(Path(config.temp_dir), config.worker_id)
        if removed:
            self.log.info("removed leftover workspaces", workspaces=removed)
        restarts = systemd_restarts()
        if restarts is not None:
            self.metrics.service_restarts.set(restarts)
        for notice in config.notices:
            self.log.warning(f"config: {notice}")
        if config.sandbox == "process":
            self.log.warning("sandbox = process isolates nothing: jobs run as this user, can read its files and "
                             "secrets, reach every address, and have no memory, CPU or task limits")
        if config.metrics_address:
            self.metrics_endpoint = MetricsEndpoint(
                config.metrics_address, self.metrics, self.health, self.log, retry=self.metrics_bind_retry,
                inherited=self.notifier.stored.get(METRICS_FD_NAME),
                keep=lambda fd: self.notifier.store_fd(fd, METRICS_FD_NAME),
                forget=lambda: self.notifier.remove_stored(METRICS_FD_NAME),
            ).start()
        self.log.info(
            "agent started",
            version=__version__,
            concurrency=config.concurrency,
            sandbox=self.runner.name,
            convex_url=config.convex_url,
            metrics=self.metrics_endpoint.address if self.metrics_endpoint else None,
        )
        if self.wake is not None:
            self.wake.start()
        self.notifier.ready(self._status_line())

    def _tick(self) -> bool:
        """One turn of the loop; False once a stop signal came (then the agent drains)."""
        self.last_tick = time.monotonic()
        self._hang_if_asked()
        if self.reload_requested:
            self._reload()
        if self.draining:
            return False
        self._preflight()
        self._claim_into_free_slots()
        self._read_queue_depth()
        self._report()
        # A paused host has free slots but must not claim: sleeping until the next claim would spin.
        until_claim = self.schedule.next_at() - time.monotonic()
        self._sleep(min(LOOP_TICK, max(0.0, until_claim)) if self._can_claim() else LOOP_TICK)
        return True

    def _claim_into_free_slots(self) -> None:
        # A stop signal may land during a claim: claim nothing more once draining.
        while self._can_claim() and time.monotonic() >= self.schedule.next_at():
            attempt = self.schedule.claiming()
            try:
                claim = self.api.claim(self.config.lease_ms)
            except (ConvexUnavailable, FunctionError) as error:
                failures = self.schedule.failed(attempt)
                if failures == 1 or failures % 10 == 0:
                    self.log.warning("cannot claim jobs", error=str(error), failures=failures)
                return
            recovered = self.schedule.answered(attempt, found_job=claim is not None)
            if recovered:
                self.log.info("Convex reachable again", after_failures=recovered)
            self.metrics.last_poll.set(time.time())
            if claim is None:
                return
            self._start_job(claim, attempt.started_at)

    def _preflight(self) -> None:
        """Starts the preflight when it has not passed since the start or the last reload, unless one
        is running, a pause is (a failed one paused claiming: it runs again when the pause ends) or every
        slot is busy (a reload while jobs run: the job-user pool has a user for each slot, so the
        preflight's job waits for one of this worker's own jobs to end, as a claim would). Takes the
        verdict of one that ended; one started before the last reload is run again."""
        if self.preflight_check is not None:
            running = self.preflight_check
            if not running.verdict.done():
                return
            self.preflight_check = None
            if running.reload == self.reloads:
                self._preflight_verdict(running.verdict)
        if self.preflight_passed or self.host_pause.paused_for() or len(self.jobs) >= self.config.concurrency:
            return
        self.preflight_runs += 1
        stopper = preflight.Stopper()
        check = self.preflight_pool.submit(preflight.run_preflight, self.config, self.runner, self.preflight_runs,
                                           stopper)
        check.add_done_callback(lambda _: self._wake())
        self.preflight_check = PreflightCheck(self.reloads, check, stopper)

    def _preflight_verdict(self, check: Future[str]) -> None:
        try:
            version = check.result()  # anything but PreflightFailed is a bug: it stops the agent, as before
        except preflight.PreflightFailed as failure:
            self.cli_version = None
            self.preflight_failure = str(failure)
            self.metrics.host_failures.labels(preflight.PAUSE_KIND).inc()
            seconds = self.host_pause.host_failure(preflight.PAUSE_KIND, self.preflight_failure, at_once=True)
            self.log.error("preflight failed: claiming paused", seconds=seconds, reason=str(failure))
            return
        self.preflight_passed = True
        self.preflight_failure = None
        self.cli_version = version
        self.log.info("preflight passed: claiming", cli_version=version)

    def _stop_preflight(self) -> None:
        if self.preflight_check is not None:
            self.preflight_check.stopper.stop()

    def _read_queue_depth(self) -> None:
        """Polls the queue's depth while no subscription delivers it (wake = poll, or it is down); not
        while a preflight runs: the turn that takes its verdict claims first, then reads it."""
        if (time.monotonic() < self.next_depth_read or self.preflight_check is not None
                or (self.wake is not None and self.wake.depth_live())):
            return
        self.next_depth_read = time.monotonic() + QUEUE_DEPTH_INTERVAL
        try:
            depth = self.api.queue_depth()
        except ConvexApiError as error:
            # The gauges keep their last values; an outage has its own metrics and alert.
            self.log.warning("cannot read the queue's depth", error=str(error))
            return
        self.metrics.set_queue_depth(depth)

    def _start_job(self, claim, claimed_at: float) -> None:
        self.metrics.jobs_claimed.inc()
        if claim.attempt == 1 and claim.job.get("createdAt"):
            self.metrics.queue_wait.observe(max(0.0, time.time() - claim.job["createdAt"] / 1000))
        job = Job(
            claim,
            config=self.config,
            api=self.api,
            runner=self.runner,
            metrics=self.metrics,
            log=self.log,
            claimed_at=claimed_at,
            git_token=self.git_token,
            claude=self.claude,
        )
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{claim.job_id}", daemon=True)
        with self.jobs_lock:
            self.jobs[claim.job_id] = (job, thread)
            self.metrics.slots_busy.set(len(self.jobs))
        job.log.info("job claimed", repository=claim.job.get("repositoryUrl"))
        thread.start()

    def _run_job(self, job: Job) -> None:
        outcome = JobOutcome.AGENT_ERROR
        try:
            outcome = job.run()
        except Exception:  # job.run handles its own errors; this only keeps the slot from leaking
            job.log.exception("job thread crashed")
        finally:
            self._count_for_host(job, outcome)
            self.metrics.jobs_finished.labels(outcome).inc()
            self.metrics.job_duration.labels(outcome).observe(time.monotonic() - job.claimed_at)
            with self.jobs_lock:
                self.jobs.pop(job.claim.job_id, None)
                self.metrics.slots_busy.set(len(self.jobs))
                self.counts[outcome if outcome in ("completed", "failed") else "other"] += 1
            self._wake()

    def _count_for_host(self, job: Job, outcome: JobOutcome) -> None:
        failure = job.host_failure
        if outcome == JobOutcome.HOST_FAILURE and failure is not None:
            self.metrics.host_failures.labels(failure.kind).inc()
            seconds = self.host_pause.host_failure(failure.kind, str(failure), at_once=failure.kind in PAUSE_AT_ONCE)
            if seconds:
                self.log.error(
                    "host problems in a row: claiming paused", seconds=seconds, reason=self.host_pause.reason
                )
        elif outcome in (JobOutcome.COMPLETED, JobOutcome.FAILED, JobOutcome.RETRYING):
            self.host_pause.job_ended_normally()

    def _drain(self) -> None:
        """A graceful stop, in order (as dramatiq's Worker.stop): claim nothing more (the loop has
        stopped), tell systemd, let running jobs finish within drain_timeout, release those still
        running (at once after a second stop signal), and wait until their releases reached Convex."""
        deadline = time.monotonic() + self.config.drain_timeout
        self._stop_preflight()  # a stopping agent uses no verdict
        self.metrics.draining.set(1)
        self.log.info("draining: no new jobs", running=len(self.jobs), drain_timeout=self.config.drain_timeout)
        self._drain_turn(deadline, 0.0)
        while self.jobs and not self.release_now and time.monotonic() < deadline:
            self._drain_turn(deadline, min(LOOP_TICK, deadline - time.monotonic()))
        with self.jobs_lock:
            jobs = [job for job, _ in self.jobs.values()]
        for job in jobs:
            job.stop(StopReason.RELEASED)
        while self.jobs or self.preflight_check:  # the preflight's job ends once stopped
            self._drain_turn(deadline, LOOP_TICK)
            if self.preflight_check and self.preflight_check.verdict.done():
                self.preflight_check = None

    def _drain_turn(self, deadline: float, sleep: float) -> None:
        """One turn of the loop while draining: systemd hears that the agent is alive and stopping."""
        self.last_tick = time.monotonic()
        # Releasing may wait for Convex until a lease runs out: ask systemd for that much more time.
        self.notifier.stopping(extend_timeout_s=max(0.0, deadline - self.last_tick) + self.config.lease_time + 10)
        self._report()
        self._sleep(sleep)

    def _reload(self) -> None:
        self.reload_requested = False
        self.notifier.reloading()
        try:
            fresh = load_config(self.config_path)
        except ConfigError as error:
            self.log.error("reload refused; keeping the running config", problems=error.problems)
        else:
            kept = {key: getattr(self.config, key) for key in RESTART_ONLY}
            ignored = [key for key, value in kept.items() if getattr(fresh, key) != value]
            if ignored:
                self.log.warning("these settings change only at restart", keys=ignored)
            self.config = dataclasses.replace(fresh, **kept)
            self.schedule.pacing = self.config
            self.host_pause.configure(*_pause_settings(fresh))
            self.metrics.slots_total.set(self.config.concurrency)
            self.log.info("config reloaded", concurrency=self.config.concurrency)
        self.preflight_passed = False  # the config, the CLI or the credential may have changed
        self.reloads += 1
        self._stop_preflight()  # its verdict is stale: the next turn starts one with what was reloaded
        if self.host_pause.resume():  # the operator may have fixed the host: try again now
            self.log.info("reload: claiming resumes after a pause for host problems")
        self.notifier.ready(self._status_line())

    def _report(self) -> None:
        paused = bool(self.host_pause.paused_for())
        if paused != self.was_paused:
            self.metrics.host_paused.set(int(paused))
            if not paused:
                self.log.info("pause for host problems over: claiming again")
            self.was_paused = paused
        self.notifier.watchdog()
        status = self._status_line()
        if status != self.last_status:
            self.notifier.status(status)
            self.last_status = status

    def _hang_if_asked(self) -> None:
        switch = os.environ.get(HANG_SWITCH_ENV)
        if switch and os.path.exists(switch):
            self.log.warning("main loop hanging on purpose (test switch)", switch=switch)
            while os.path.exists(switch):
                time.sleep(0.5)

    def _shut_down(self) -> None:
        self.log.info("agent stopped", completed=self.counts["completed"], failed=self.counts["failed"])
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        self.preflight_pool.shutdown()
        self.claude.close()
        self.http.close()


def _pause_settings(config: Config) -> tuple[int, float, float]:
    return config.host_failure_threshold, config.host_pause_initial, config.host_pause_max


def _read_git_token(config: Config) -> str | None:
    if not config.git_token_file:
        return None
    try:
        return Path(config.git_token_file).read_text(encoding="utf-8").strip() or None
    except OSError as error:
        raise ConfigError([f"git_token_file: cannot read {config.git_token_file}: {error.strerror}"]) from error


def _claude_access(config: Config) -> ClaudeAccess:
    try:
        return ClaudeAccess.for_agent(
            sandbox=config.sandbox, credentials_file=config.claude_credentials_file, upstream=config.claude_upstream,
            control_socket=config.gateway_control_socket, max_retries=config.claude_max_retries,
            max_tokens=config.claude_max_tokens)
    except CredentialsError as error:
        raise ConfigError([str(error)]) from None


def run_worker(config_path: Path | None) -> int:
    config = load_config(config_path)
    configure_logging(log_format=config.log_format, worker_id=config.worker_id)
    worker = Worker(config, config_path, worker_token=config.worker_token(), git_token=_read_git_token(config),
                    claude=_claude_access(config))
    return worker.run()
