"""The `fondation-agent` command: run the worker, check a config, and talk to the queue.

The queue commands are the operator's: they call the app's internal `operator:*` functions with
the deployment's admin key, read from $CONVEX_ADMIN_KEY or --admin-key-file (never an argument,
which every local user could read in the process list).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fondation_agent import __version__
from fondation_agent.config import DEFAULT_CONFIG_PATH, ConfigError, instance_config_path, load_config
from fondation_agent.queue.convex_api import ConvexApiError, ConvexHttp, operator_docs
from fondation_agent.queue.rules import Status

EXIT_USAGE = 2
DEFAULT_PROMPT = "Turn this repository into a course for new contributors."


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: `--admin-key KEY` must not pass for --admin-key-file.
    parser = argparse.ArgumentParser(prog="fondation-agent", description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the worker until stopped")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, default=None, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    # The units pass their instance name (%i, empty for fondation-agent.service): one unit file for all.
    where.add_argument("--instance", metavar="NAME", default=None,
                       help=f"worker instance NAME: config {DEFAULT_CONFIG_PATH.with_name('NAME.toml')}; "
                            f"an empty NAME means {DEFAULT_CONFIG_PATH}")

    check = commands.add_parser("check-config", help="validate a config file; exit 2 with one line per problem")
    check.add_argument("file", type=Path)

    def queue_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, allow_abbrev=False)
        command.add_argument("--url", default=None, help="Convex deployment URL (default: $CONVEX_URL)")
        command.add_argument(
            "--admin-key-file", type=Path, default=None,
            help="file holding the deployment's admin key (default: $CONVEX_ADMIN_KEY)",
        )
        return command

    enqueue = queue_command("enqueue", "queue a job; prints its id")
    enqueue.add_argument("--repo", required=True, help="repository URL (https)")
    enqueue.add_argument("--branch", default=None)
    enqueue.add_argument("--prompt", default=DEFAULT_PROMPT)
    enqueue.add_argument("--dedup-key", default=None, help="reuse an unfinished job with this key")
    enqueue.add_argument("--max-attempts", type=int, default=None)

    jobs = queue_command("jobs", "list jobs, newest first")
    jobs.add_argument("--status", choices=[status.value for status in Status], default=None)
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="machine-readable output")

    job = queue_command("job", "show one job and its documents")
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--json", action="store_true", help="machine-readable output")

    cancel = queue_command("cancel", "cancel a job (a running one stops at its next heartbeat)")
    cancel.add_argument("job_id", metavar="ID")
    cancel.add_argument("--reason", default=None, help="why, kept on the job and shown as its error")

    backfill = queue_command(
        "backfill", "after upgrading the queue's functions: give jobs queued before shards and counters a shard, "
                    "and count them; waits until every batch ran",
    )
    backfill.add_argument("--timeout", type=float, default=600, help="seconds to wait for the batches (default 600)")

    commands.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        for problem in error.problems:
            print(f"fondation-agent: config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ConvexApiError as error:
        print(f"fondation-agent: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from fondation_agent.worker import run_worker  # the queue commands need none of the worker's imports

    path = args.config
    if args.instance is not None:
        path = instance_config_path(args.instance)
    elif path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    return run_worker(path)


def _check_config(args: argparse.Namespace) -> int:
    # The file alone, wherever this runs (Ansible's ssh, a shell): no overrides, and no systemd to
    # refuse the process sandbox for; `run` under systemd does that with its own environment.
    config = load_config(args.file, environ={})
    for notice in config.notices:
        print(f"{args.file}: {notice}", file=sys.stderr)
    print(f"{args.file}: ok (worker_id={config.worker_id}, concurrency={config.concurrency}, sandbox={config.sandbox})")
    return 0


def _client(args: argparse.Namespace) -> ConvexHttp:
    url = args.url or os.environ.get("CONVEX_URL")
    if not url:
        raise ConfigError(["convex_url: set CONVEX_URL or pass --url"])
    return ConvexHttp(url, read_timeout=30, admin_key=_admin_key(args.admin_key_file))


def _admin_key(path: Path | None) -> str:
    if path is not None:
        try:
            key = path.read_text().strip()
        except OSError as error:
            raise ConfigError([f"admin key: cannot read {path}: {error.strerror}"]) from error
    else:
        key = os.environ.get("CONVEX_ADMIN_KEY", "").strip()
    if not key:
        raise ConfigError(["admin key: set CONVEX_ADMIN_KEY or pass --admin-key-file (the deployment's admin key)"])
    return key


def _enqueue(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"repositoryUrl": args.repo, "prompt": args.prompt}
    optional = {"branch": args.branch, "dedupKey": args.dedup_key, "maxAttempts": args.max_attempts}
    request.update({key: value for key, value in optional.items() if value is not None})
    print(_client(args).mutation("operator:enqueue", request))
    return 0


def _age(timestamp_ms: float | None) -> str:
    if not timestamp_ms:
        return "-"
    seconds = max(0, time.time() - timestamp_ms / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _step(job: dict[str, Any]) -> str:
    if job.get("currentStep") is not None and job.get("totalSteps"):
        return f"{int(job['currentStep'])}/{int(job['totalSteps'])}"
    return "-"


def _jobs(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"limit": args.limit}
    if args.status:
        request["status"] = args.status
    jobs = _client(args).query("operator:list", request)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    rows = [("ID", "STATUS", "STEP", "TRIES", "AGE", "REPOSITORY")]
    rows += [
        (
            job["_id"],
            job["status"] + (" (cancel requested)" if job.get("cancelRequested") else ""),
            _step(job),
            f"{int(job['attempts'])}/{int(job['maxAttempts'])}",
            _age(job.get("createdAt")),
            job["repositoryUrl"],
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _job(args: argparse.Namespace) -> int:
    client = _client(args)
    job = client.query("operator:get", {"jobId": args.job_id})
    if job is None:
        print(f"fondation-agent: no job {args.job_id}", file=sys.stderr)
        return 1
    docs = operator_docs(client, args.job_id)
    if args.json:
        print(json.dumps({"job": job, "docs": docs}, indent=2))
        return 0
    fields = [
        ("id", job["_id"]),
        ("status", job["status"] + (" (cancel requested)" if job.get("cancelRequested") else "")),
        ("repository", job["repositoryUrl"] + (f" ({job['branch']})" if job.get("branch") else "")),
        ("progress", f"{job.get('progress', '-')} [step {_step(job)}]"),
        ("attempts", f"{int(job['attempts'])} of {int(job['maxAttempts'])}"),
        ("worker", job.get("leaseOwner") or "-"),
        ("created", f"{_age(job.get('createdAt'))} ago"),
        ("updated", f"{_age(job.get('updatedAt'))} ago"),
    ]
    if job.get("error"):
        fields.append(("error", f"[{job.get('errorKind', '?')}] {job['error']}"))
    for name, value in fields:
        print(f"{name + ':':<12}{value}")
    if docs:
        print(f"documents ({len(docs)}):")
        for doc in docs:
            print(f"  {int(doc['chapterIndex']):>3}  {doc['title']}  ({len(doc['content'])} chars)")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    reason = {} if args.reason is None else {"reason": args.reason}
    result = _client(args).mutation("operator:cancel", {"jobId": args.job_id, **reason})
    print(f"{args.job_id}: {result['status'].replace('_', ' ')}")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    client = _client(args)
    first = client.mutation("operator:backfill", {})
    print(f"backfilled {int(first['backfilled'])} job(s) in the first batch"
          + ("; the rest in scheduled batches" if first["more"] else ""))
    deadline = time.monotonic() + args.timeout
    while client.query("operator:backfillPending", {}):
        if time.monotonic() > deadline:
            print(f"fondation-agent: jobs still without a shard after {args.timeout:g} s; run backfill again",
                  file=sys.stderr)
            return 1
        time.sleep(1)
    print("every job has a shard and is counted")
    return 0


def _version(_: argparse.Namespace) -> int:
    print(f"fondation-agent {__version__}")
    return 0


COMMANDS = {
    "run": _run,
    "check-config": _check_config,
    "enqueue": _enqueue,
    "jobs": _jobs,
    "backfill": _backfill,
    "job": _job,
    "cancel": _cancel,
    "version": _version,
}

if __name__ == "__main__":
    sys.exit(main())
