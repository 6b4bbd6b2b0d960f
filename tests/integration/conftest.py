"""Every integration test: kill what a failed test may leave (an orphaned CLI of a killed agent)."""

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.integration.agent_processes import job_processes


@pytest.fixture(autouse=True)
def no_stray_processes(tmp_path: Path):
    yield
    for pid in job_processes(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
