"""The first program of a job's unit: reads the job's argv and environment from its spec file and execs
the CLI. The launcher writes the spec (owned by the job's user, mode 0400) so that neither the prompt
nor any value of the job's environment is a unit property (ExecStart=, Environment=), which every local
user can read with `systemctl show`; and JSON carries any text, newlines included.

Runs as the job user, inside the sandbox; imports nothing of the agent.
"""

from __future__ import annotations

import json
import os
import sys


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    argv, environment = spec["argv"], {**os.environ, **spec["env"]}
    os.execvpe(argv[0], argv, environment)  # noqa: S606 (the CLI the operator configured, checked by the launcher)


if __name__ == "__main__":
    main(sys.argv[1])
