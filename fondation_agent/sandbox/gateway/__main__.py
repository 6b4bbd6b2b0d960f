"""`python3 -I -m fondation_agent.sandbox.gateway serve [--settings PATH]` and `check-config PATH`.

`serve` reads the credential, listens on the jobs socket (0666: jobs connect through their relay)
and the control socket (0660: the agents, group fondation), says READY=1 to systemd, and runs until
SIGTERM. `check-config` validates a gateway.toml and its credentials file; exit 2 with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

from fondation_agent.host.logs import configure_logging, get_logger
from fondation_agent.host.notify import Notifier
from fondation_agent.sandbox.gateway import DEFAULT_SETTINGS_PATH
from fondation_agent.sandbox.gateway.credentials import CredentialsError, read_credentials
from fondation_agent.sandbox.gateway.server import Gateway, start_unix_site
from fondation_agent.sandbox.gateway.settings import GatewaySettings, SettingsError, load_settings

EXIT_CONFIG = 2
JOBS_SOCKET_MODE = 0o666
CONTROL_SOCKET_MODE = 0o660


def _settings(path: Path) -> tuple[GatewaySettings, dict[str, str]]:
    settings = load_settings(path)
    return settings, read_credentials(Path(settings.credentials_file))


async def serve(settings: GatewaySettings, credential: dict[str, str], notifier: Notifier) -> None:
    gateway = Gateway(credential=credential, upstream=settings.upstream,
                      max_request_bytes=settings.max_request_bytes)
    jobs, control = web.AppRunner(gateway.jobs_app()), web.AppRunner(gateway.control_app())
    await jobs.setup()
    await control.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await start_unix_site(jobs, settings.jobs_socket, JOBS_SOCKET_MODE)
        await start_unix_site(control, settings.control_socket, CONTROL_SOCKET_MODE)
        gateway.log.info("gateway listening", jobs_socket=settings.jobs_socket,
                         control_socket=settings.control_socket, upstream=settings.upstream)
        notifier.ready(f"forwarding to {settings.upstream}")
        await stop.wait()
        notifier.stopping()
    finally:
        await jobs.cleanup()
        await control.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fondation_agent.sandbox.gateway", description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the gateway until SIGTERM")
    run.add_argument("--settings", type=Path, default=Path(DEFAULT_SETTINGS_PATH))
    check = commands.add_parser("check-config", help="validate a gateway.toml and its credentials file")
    check.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    path = args.settings if args.command == "serve" else args.file
    try:
        settings, credential = _settings(path)
    except (SettingsError, CredentialsError) as error:
        print(f"fondation-agent-gateway: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{path}: OK")
        return 0
    notifier = Notifier()
    configure_logging(worker_id="gateway")
    get_logger().info("gateway starting", settings=str(path))
    asyncio.run(serve(settings, credential, notifier))
    return 0


if __name__ == "__main__":
    sys.exit(main())
