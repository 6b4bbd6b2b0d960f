"""`make demo`: a real job end to end on this machine.

Starts localconvex (the local stand-in for a Convex deployment), queues a job for this very
repository, runs one agent with the demo course CLI (examples/course-cli), follows the job to its
end (printing each status and step as the web UI would show them), prints its documents by kind
(yaml, chapter, tutorial, toc), and stops everything. `make demo DEMO_CLI_LOG=silent` runs the demo
CLI silent, so the steps come from the files it writes; `tty` and `progress` pick its other forms.

`make demo DEMO_ENGINE=claude` has the real Claude Code write the course (the demo CLI's Claude
engine): it needs `ANTHROPIC_API_KEY` or `CLAUDE_CODE_OAUTH_TOKEN` in your environment (written to
the agent's `claude_credentials_file`, 0600, removed at the end; `ANTHROPIC_BASE_URL` is its
`claude_upstream` if set), takes minutes and costs what the Anthropic API charges. The offline
engine (the default) calls nothing.

The demo allows local repositories (`allow_local_repositories`, and
FONDATION_ACCEPT_ANY_REPOSITORY_URL on the backend); production accepts only https URLs on
allowed hosts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fondation_agent.job.cli_contract import STEPS
from fondation_agent.queue.convex_api import ConvexHttp, operator_docs
from fondation_agent.queue.rules import FINISHED_STATUSES
from localconvex.launcher import LocalConvex

ROOT = Path(__file__).resolve().parent.parent
COURSE_CLI = ROOT / "examples" / "course-cli" / "cli.mjs"
SHOWN_PER_KIND = 4
STEP_DELAY_MS = 1500  # each of the six steps takes this long, so every one shows


def claude_credential(engine: str) -> str | None:
    """The credentials file's line: yours for the Claude engine; the offline engine calls no model."""
    if engine == "offline":
        return "ANTHROPIC_API_KEY=the-offline-engine-calls-no-model"
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return None


def write_secret(path: Path, text: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return path


def write_config(directory: Path, convex_url: str, token: str, cli_log: str, engine: str, credential: str) -> Path:
    token_file = write_secret(directory / "worker-token", token)
    claude_file = write_secret(directory / "claude.env", credential)
    upstream = os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
    node = shutil.which("node") or "node"
    config = directory / "agent.toml"
    config.write_text(
        f'convex_url = "{convex_url}"\n'
        'worker_id = "demo-agent"\n'
        f'worker_token_file = "{token_file}"\n'
        f'claude_credentials_file = "{claude_file}"\n'
        f'claude_upstream = "{upstream}"\n'
        f'temp_dir = "{directory / "workspaces"}"\n'
        "poll_interval = 0.5\n"
        "lease_time = 30\n"
        "heartbeat_interval = 5\n"
        "allow_local_repositories = true\n"
        "allow_unisolated = true\n"  # sandbox = process, deliberately: a demo on your own machine
        f'cli_command = "{node} {COURSE_CLI} analyze {{repo}} --profile demo --engine {engine}"\n'
        f'cli_env = {{ COURSE_CLI_STEP_DELAY_MS = "{STEP_DELAY_MS}", COURSE_CLI_LOG = "{cli_log}" }}\n'
        'metrics_address = "127.0.0.1:0"\n'
        'log_format = "console"\n'
    )
    return config


def follow(client: ConvexHttp, job_id: str, timeout: float = 300) -> dict:
    """Prints each change of status or progress until the job ends."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.query("operator:get", {"jobId": job_id})
        shown = (job["status"], job.get("progress"), job.get("currentStep"))
        if shown != last:
            step = f"[step {int(job['currentStep'])}/{int(job['totalSteps'])}]" if job.get("currentStep") else ""
            print(f"  job {job['status']:<10} {step:<12} {job.get('progress', '')}", flush=True)
            last = shown
        if job["status"] in FINISHED_STATUSES:
            return job
        time.sleep(0.2)
    raise SystemExit(f"demo: the job did not finish within {timeout} s")


def main() -> int:
    if not (ROOT / ".git").exists():
        print("demo: run it from a git checkout (the job clones this repository)", file=sys.stderr)
        return 1
    cli_log = os.environ.get("DEMO_CLI_LOG") or "json"
    engine = os.environ.get("DEMO_ENGINE") or "offline"
    credential = claude_credential(engine)
    if credential is None:
        print("demo: DEMO_ENGINE=claude needs ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="fondation-demo-") as scratch:
        directory = Path(scratch)
        backend = LocalConvex(token=token, env={"FONDATION_ACCEPT_ANY_REPOSITORY_URL": "1"}).start()
        agent = None
        try:
            print(f"localconvex ready at {backend.url}")
            # The operator's client (localconvex's generated admin key): it queues and follows the job.
            client = ConvexHttp(backend.url, admin_key=backend.admin_key)
            job_id = client.mutation(
                "operator:enqueue",
                {"repositoryUrl": str(ROOT), "prompt": "A tour of fondation-agent for new contributors."},
            )
            print(f"queued job {job_id} for {ROOT}")
            config = write_config(directory, backend.url, token, cli_log, engine, credential)
            print(f"demo CLI: engine {engine}, log {cli_log} ({len(STEPS)} steps)")
            agent_log = directory / "agent.log"
            with open(agent_log, "wb") as log:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "fondation_agent.cli", "run", "--config", str(config)],
                    cwd=ROOT, stdout=log, stderr=log,
                )
            print("agent started (its log follows the job's end)")
            job = follow(client, job_id, timeout=300 if engine == "offline" else 3600)
            agent.terminate()
            agent.wait(timeout=60)
            print("\n--- agent log (last lines) ---")
            print("\n".join(agent_log.read_text(errors="replace").splitlines()[-12:]))
            print("\n--- result ---")
            print(f"job {job_id}: {job['status']} after {int(job['attempts'])} attempt(s)")
            if job.get("error"):
                print(f"error [{job.get('errorKind')}]: {job['error']}")
            docs = operator_docs(client, job_id)
            print(f"{len(docs)} documents:")
            for kind in ("yaml", "toc", "chapter", "tutorial"):
                of_kind = [doc for doc in docs if doc["kind"] == kind]
                print(f"  {kind} ({len(of_kind)}):")
                for doc in of_kind[:SHOWN_PER_KIND]:
                    print(f"    {int(doc['chapterIndex']):>3}  {doc['title']}")
                if len(of_kind) > SHOWN_PER_KIND:
                    print(f"         … and {len(of_kind) - SHOWN_PER_KIND} more")
            return 0 if job["status"] == "completed" and docs else 1
        finally:
            if agent is not None and agent.poll() is None:
                agent.kill()
            backend.stop()


if __name__ == "__main__":
    sys.exit(main())
