"""examples/platform-app (the platform's function names, userId passed as an argument) served by a
real localconvex, one job run by a real agent, and the UI's calls answering as its pages expect:
the job page (job, live logs), the course page (paginated docs, a chapter by slug), cancel with a
reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fondation_agent.queue.convex_api import ConvexHttp, InvalidArgument
from localconvex.launcher import LocalConvex
from tests.git_repos import make_git_repo
from tests.helpers import eventually
from tests.integration.conftest import TOKEN

pytestmark = pytest.mark.timeout(180)
PLATFORM_APP = Path(__file__).resolve().parents[2] / "examples" / "platform-app" / "convex"


@pytest.fixture
def github(tmp_path: Path) -> Path:
    """Where the platform clones from (PLATFORM_GIT_BASE_URL): alice/widgets is a real git repository."""
    make_git_repo(tmp_path / "github" / "alice" / "widgets")
    return tmp_path / "github"


@pytest.fixture
def backend(tmp_path: Path, github: Path) -> Iterator[LocalConvex]:
    """The platform's app instead of the repository's own (the agents fixture serves this one)."""
    server = LocalConvex(state_file=tmp_path / "platform-state.json", token=TOKEN, functions_dir=PLATFORM_APP,
                         env={"FONDATION_ACCEPT_ANY_REPOSITORY_URL": "1", "PLATFORM_GIT_BASE_URL": str(github)})
    with server:
        yield server


@pytest.fixture
def platform(backend: LocalConvex) -> Iterator[tuple[ConvexHttp, ConvexHttp]]:
    """The UI's client (no auth: the platform passes userId) and the admin's (its GitHub sync's internals)."""
    ui = ConvexHttp(backend.url, read_timeout=10, retries=0)
    admin = ConvexHttp(backend.url, read_timeout=10, retries=0, admin_key=backend.admin_key)
    yield ui, admin
    ui.close()
    admin.close()


def _alice_and_her_repository(ui: ConvexHttp, admin: ConvexHttp) -> tuple[str, str]:
    alice = ui.mutation("users:createOrUpdateUser", {"githubId": "1001", "username": "alice"})
    repository = admin.mutation("repositories:create", {"userId": alice, "githubRepoId": "77", "name": "widgets",
                                                        "fullName": "alice/widgets", "defaultBranch": "main"})
    return alice, repository


def _job_once(ui: ConvexHttp, job_id: str, status: str) -> dict[str, Any]:
    """The job page's job (jobs:getJob), once it has `status`."""
    return eventually(lambda: (job := ui.query("jobs:getJob", {"jobId": job_id}))["status"] == status and job,
                      timeout=60)


def _all_docs(ui: ConvexHttp, job_id: str, page_size: int) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        page_opts = {"numItems": page_size, "cursor": cursor}
        result = ui.query("docs:listByJobId", {"jobId": job_id, "paginationOpts": page_opts})
        pages.append(result["page"])
        if result["isDone"]:
            return pages
        cursor = result["continueCursor"]


def test_a_course_runs_through_a_real_agent_and_the_uis_calls_answer(platform, agents):
    ui, admin = platform
    alice, repository = _alice_and_her_repository(ui, admin)
    job_id = ui.mutation("jobs:startAnalysis", {"repositoryId": repository, "userId": alice,
                                                "repoUrl": "https://github.com/alice/widgets"})["jobId"]
    assert ui.query("jobs:getJobByRepository", {"repositoryId": repository})["_id"] == job_id
    agents()
    job = _job_once(ui, job_id, "completed")
    assert (job["currentStep"], job["totalSteps"]) == (6, 6)
    assert job["metadata"] == {"fullName": "alice/widgets"}
    logs = ui.query("jobs:getLogs", {"jobId": job_id})
    assert logs and logs[0]["seq"] == 0 and logs[0]["msg"].startswith("[PROGRESS] Step 1/6"), logs
    pages = _all_docs(ui, job_id, page_size=2)
    assert len(pages) >= 2 and all(len(page) <= 2 for page in pages)
    slugs = [doc["slug"] for page in pages for doc in page]
    assert slugs == ["index", "01_first", "02_second"]
    # The platform's copy, made by onComplete in its own transactions.
    chapter = eventually(lambda: ui.query("docs:getBySlug", {"jobId": job_id, "slug": "01_first"}))
    assert chapter["title"] == "First chapter"
    assert ui.query("jobs:getLatestCompletedByRepository", {"repositoryId": repository})["_id"] == job_id
    activity = eventually(lambda: (feed := ui.query("users:getActivity", {"userId": alice}))
                          and feed[0]["newStatus"] == "completed" and feed)
    assert activity[-1]["oldStatus"] == "pending" and activity[-1]["attempt"] == 1
    assert "lastAnalyzedAt" in ui.query("github:getRepositoryWithMetadata", {"repositoryId": repository})
    listed = ui.query("jobs:listUserJobs", {"userId": alice, "paginationOpts": {"numItems": 10, "cursor": None}})
    assert [j["_id"] for j in listed["page"]] == [job_id]


def test_a_running_course_shows_live_logs_and_is_canceled_with_the_users_reason(platform, agents):
    ui, admin = platform
    alice, repository = _alice_and_her_repository(ui, admin)
    job_id = ui.mutation("jobs:create", {"userId": alice, "repositoryId": repository, "prompt": "hang"})["jobId"]
    agents()
    logs = eventually(lambda: ui.query("jobs:getLogs", {"jobId": job_id}), timeout=30)
    assert logs[0]["msg"] == "[PROGRESS] Step 1/6: Extracting abstractions"
    answer = ui.mutation("jobs:cancelJob", {"jobId": job_id, "userId": alice, "reason": "wrong branch"})
    assert answer == {"jobId": job_id, "status": "cancel_requested"}
    job = _job_once(ui, job_id, "canceled")
    assert job["error"] == "wrong branch"


def test_bad_input_from_the_ui_is_refused_at_once(platform):
    ui, admin = platform
    alice, _ = _alice_and_her_repository(ui, admin)
    with pytest.raises(InvalidArgument, match="is not a repository id"):
        ui.query("jobs:getJobByRepository", {"repositoryId": "not-an-id"})
    with pytest.raises(InvalidArgument, match=r"paginationOpts\.cursor"):
        ui.query("jobs:listUserJobs", {"userId": alice, "paginationOpts": {"numItems": 10, "cursor": "bogus"}})
