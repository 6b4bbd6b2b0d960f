"""`make demo`: a real job end to end on this machine.

Starts localconvex (the local stand-in for a Convex deployment), queues a job for this very
repository, runs one agent with the demo course CLI (examples/course-cli), follows the job to its
end, prints its final state and the titles of its documents, and stops everything.

The demo allows local repositories (`allow_local_repositories`, and
FONDATION_ACCEPT_ANY_REPOSITORY_URL on the backend); production accepts only https URLs on
allowed hosts.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fondation_agent.convex_api import ConvexHttp
from localconvex.launcher import LocalConvex

ROOT = Path(__file__).resolve().parent.parent
COURSE_CLI = ROOT / "examples" / "course-cli" / "cli.mjs"
TERMINAL = ("completed", "failed", "canceled")


def write_config(directory: Path, convex_url: str, token: str) -> Path:
    token_file = directory / "worker-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    node = shutil.which("node") or "node"
    config = directory / "agent.toml"
    config.write_text(
        f'convex_url = "{convex_url}"\n'
        'worker_id = "demo-agent"\n'
        f'worker_token_file = "{token_file}"\n'
        f'temp_dir = "{directory / "workspaces"}"\n'
        "poll_interval = 0.5\n"
        "lease_time = 30\n"
        "heartbeat_interval = 5\n"
        "allow_local_repositories = true\n"
        f'cli_command = "{node} {COURSE_CLI} analyze {{repo}} --profile demo"\n'
        'cli_env = { COURSE_CLI_STEP_DELAY_MS = "300" }\n'
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
        shown = (job["status"], job.get("progress"))
        if shown != last:
            print(f"  job {job['status']:<10} {job.get('progress', '')}", flush=True)
            last = shown
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    raise SystemExit(f"demo: the job did not finish within {timeout} s")


def main() -> int:
    if not (ROOT / ".git").exists():
        print("demo: run it from a git checkout (the job clones this repository)", file=sys.stderr)
        return 1
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
            config = write_config(directory, backend.url, token)
            agent_log = directory / "agent.log"
            with open(agent_log, "wb") as log:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "fondation_agent.cli", "run", "--config", str(config)],
                    cwd=ROOT, stdout=log, stderr=log,
                )
            print("agent started (its log follows the job's end)")
            job = follow(client, job_id)
            agent.terminate()
            agent.wait(timeout=60)
            print("\n--- agent log (last lines) ---")
            print("\n".join(agent_log.read_text(errors="replace").splitlines()[-12:]))
            print("\n--- result ---")
            print(f"job {job_id}: {job['status']} after {int(job['attempts'])} attempt(s)")
            if job.get("error"):
                print(f"error [{job.get('errorKind')}]: {job['error']}")
            docs = client.query("operator:docs", {"jobId": job_id})
            print(f"{len(docs)} documents:")
            for doc in docs:
                print(f"  {int(doc['chapterIndex']):>3}  {doc['title']}")
            return 0 if job["status"] == "completed" and docs else 1
        finally:
            if agent is not None and agent.poll() is None:
                agent.kill()
            backend.stop()


if __name__ == "__main__":
    sys.exit(main())
