"""localconvex (localconvex/server.ts) over real HTTP, against a real server process.

Most tests use a small functions directory written here (a query, a mutation, an
internal mutation, a ConvexError, a scheduled function), so they test the server and
not the queue; the last ones run the real functions in convex/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from convex import ConvexClient, ConvexError, ConvexInt64, QuerySubscription
from convex.http_client import ConvexExecutionError, ConvexHttpClient

from localconvex.launcher import REPO_ROOT, SERVER, TEST_ISSUER, LocalConvex, identity_token

pytestmark = pytest.mark.timeout(120)

FIXTURE_FILES = {
    "package.json": '{"type": "module"}\n',
    "_generated/api.ts": 'export { anyApi as api, anyApi as internal } from "convex/server";\n',
    "_generated/server.ts": (
        "export {\n"
        "  queryGeneric as query, mutationGeneric as mutation, actionGeneric as action,\n"
        "  internalMutationGeneric as internalMutation,\n"
        '} from "convex/server";\n'
    ),
    "schema.ts": """\
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
export default defineSchema({
  items: defineTable({ name: v.string(), n: v.optional(v.int64()) }),
  other: defineTable({ x: v.number() }),
});
""",
    "items.ts": """\
import { ConvexError, v } from "convex/values";
import { internal } from "./_generated/api";
import { action, internalMutation, mutation, query } from "./_generated/server";

export const add = mutation({
  args: { name: v.string(), n: v.optional(v.int64()) },
  handler: (ctx, args) => ctx.db.insert("items", args),
});
export const addOther = mutation({
  args: { x: v.number() },
  handler: (ctx, args) => ctx.db.insert("other", args),
});
export const remove = mutation({ args: { id: v.id("items") }, handler: (ctx, { id }) => ctx.db.delete(id) });
export const get = query({ args: { id: v.id("items") }, handler: (ctx, { id }) => ctx.db.get(id) });
export const list = query({ args: {}, handler: (ctx) => ctx.db.query("items").collect() });
export const secret = internalMutation({ args: {}, handler: async () => "secret" });
export const fail = mutation({
  args: {},
  handler: async (ctx) => {
    await ctx.db.insert("items", { name: "rolled back" });
    throw new ConvexError({ code: "x", message: "y" });
  },
});
export const failString = query({
  args: {},
  handler: async () => { throw new ConvexError("just a string"); },
});
export const boom = query({ args: {}, handler: async () => { throw new Error("boom"); } });
export const token = query({ args: {}, handler: async () => process.env.FONDATION_WORKER_TOKEN ?? null });
export const whoami = query({ args: {}, handler: (ctx) => ctx.auth.getUserIdentity() });
export const echo = action({ args: { value: v.any() }, handler: async (_ctx, { value }) => value });
export const later = mutation({
  args: { name: v.string(), ms: v.number() },
  handler: async (ctx, { name, ms }) => {
    await ctx.scheduler.runAfter(ms, internal.items.addLater, { name });
  },
});
export const addLater = internalMutation({
  args: { name: v.string() },
  handler: (ctx, { name }) => ctx.db.insert("items", { name }),
});
export default query({ args: {}, handler: async () => "default export" });
""",
}


@pytest.fixture(scope="session")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("functions")
    for name, text in FIXTURE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    # The functions import "convex/server" etc.: resolve them to the repository's packages.
    (root / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    return root


@pytest.fixture
def backend(functions_dir: Path):
    with LocalConvex(functions_dir=functions_dir) as server:
        yield server


def post(backend: LocalConvex, kind: str, body: object) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(
        f"{backend.url}/api/{kind}", data=data, headers={"Content-Type": "application/json"}, timeout=10
    )


def counter(doc_id: str) -> int:
    return int(doc_id[: len(doc_id) - len(doc_id.lstrip("0123456789"))])


# ---------------------------------------------------------------------------- HTTP API


def test_ready_line_shows_the_real_port(backend: LocalConvex) -> None:
    assert backend.port != 0 and backend.url == f"http://127.0.0.1:{backend.port}"
    assert requests.get(f"{backend.url}/health", timeout=5).json() == {"ok": True}


def test_official_python_client(backend: LocalConvex) -> None:
    client = ConvexHttpClient(backend.url)
    item_id = client.mutation("items:add", {"name": "a", "n": ConvexInt64(5)})
    assert isinstance(item_id, str)
    doc = client.query("items:get", {"id": item_id})
    assert doc["_id"] == item_id and doc["name"] == "a" and doc["n"] == 5
    assert isinstance(doc["_creationTime"], float)

    with pytest.raises(ConvexError) as raised:
        client.mutation("items:fail")
    assert raised.value.data == {"code": "x", "message": "y"}
    with pytest.raises(ConvexError) as raised:
        client.query("items:failString")
    assert raised.value.data == "just a string"
    with pytest.raises(ConvexExecutionError, match="boom"):
        client.query("items:boom")

    # The failed mutation's insert was rolled back.
    assert [d["name"] for d in client.query("items:list")] == ["a"]
    assert client.action("items:echo", {"value": [1, "two", None]}) == [1, "two", None]


def test_wire_format(backend: LocalConvex) -> None:
    r = post(backend, "mutation", {"path": "items:fail", "args": {}, "format": "json"})
    assert r.status_code == 200
    assert r.json() == {
        "status": "error",
        "errorMessage": 'Uncaught ConvexError: {"code":"x","message":"y"}',
        "errorData": {"code": "x", "message": "y"},
        "logLines": [],
    }
    r = post(backend, "query", {"path": "items:boom", "args": {}})
    assert r.json() == {"status": "error", "errorMessage": "Uncaught Error: boom", "logLines": []}
    # Argument validation errors are plain errors (no errorData).
    body = post(backend, "mutation", {"path": "items:add", "args": {"nme": "x"}}).json()
    assert body["status"] == "error" and "errorData" not in body
    # Convex-encoded int64 in and out.
    item_id = post(
        backend, "mutation", {"path": "items:add", "args": {"name": "i", "n": {"$integer": "BwAAAAAAAAA="}}}
    ).json()["value"]
    doc = post(
        backend, "query", {"path": "items:get", "args": {"id": item_id}, "format": "convex_encoded_json"}
    ).json()
    assert doc["status"] == "success" and doc["value"]["n"] == {"$integer": "BwAAAAAAAAA="}


def test_path_and_args_forms(backend: LocalConvex) -> None:
    assert post(backend, "query", {"path": "items", "args": {}}).json()["value"] == "default export"
    assert post(backend, "query", {"path": "items.js:list", "args": {}}).json()["status"] == "success"
    # The JS client sends args as a one-element array.
    assert post(backend, "query", {"path": "items:list", "args": [{}]}).json()["status"] == "success"


def test_internal_and_missing_functions_are_refused_alike(backend: LocalConvex) -> None:
    for path in [
        "items:secret",
        "items:nope",
        "nope:nope",
        "_generated/server:query",
        "schema",
        "items:addLater",
    ]:
        r = post(backend, "mutation", {"path": path, "args": {}})
        assert r.status_code == 200
        name = path if ":" in path else f"{path}:default"
        assert r.json() == {
            "status": "error",
            "errorMessage": f"Could not find public function for '{name}'. "
            "Did you forget to run `npx convex dev` or `npx convex deploy`?",
            "logLines": [],
        }
    with pytest.raises(ConvexExecutionError, match="Could not find public function"):
        ConvexHttpClient(backend.url).mutation("items:secret")


def test_the_admin_key_reaches_internal_functions_and_a_wrong_one_nothing(backend: LocalConvex) -> None:
    admin = ConvexHttpClient(backend.url)
    admin.set_admin_auth(backend.admin_key)
    assert admin.mutation("items:secret") == "secret"
    assert admin.query("items:list") == [], "public functions too"
    for header in (f"Convex {backend.admin_key}x", "Convex ", "Basic abc"):
        r = requests.post(f"{backend.url}/api/mutation", json={"path": "items:list", "args": {}},
                          headers={"Authorization": header}, timeout=10)
        assert r.status_code == 401, header
        assert r.json()["code"] in ("BadAdminKey", "InvalidAuthHeader")


def test_without_a_configured_admin_key_no_key_works(functions_dir: Path) -> None:
    with LocalConvex(functions_dir=functions_dir, admin_key="") as server:
        r = requests.post(f"{server.url}/api/mutation", json={"path": "items:secret", "args": {}},
                          headers={"Authorization": "Convex "}, timeout=10)
        assert (r.status_code, r.json()["code"]) == (401, "BadAdminKey")


def test_a_bearer_jwt_is_the_callers_identity_unverified(backend: LocalConvex) -> None:
    client = ConvexHttpClient(backend.url)
    assert client.query("items:whoami") is None
    client.set_auth(identity_token("alice", name="Alice"))
    assert client.query("items:whoami") == {
        "subject": "alice", "issuer": TEST_ISSUER, "tokenIdentifier": f"{TEST_ISSUER}|alice", "name": "Alice",
    }
    client.set_auth("not-a-jwt")
    with pytest.raises(Exception, match="401"):
        client.query("items:whoami")


def test_wrong_endpoint_kind_is_refused(backend: LocalConvex) -> None:
    cases = [
        ("mutation", "items:list", "Trying to execute items:list as Mutation, but it is defined as Query."),
        ("query", "items:add", "Trying to execute items:add as Query, but it is defined as Mutation."),
        ("action", "items:add", "Trying to execute items:add as Action, but it is defined as Mutation."),
        ("query", "items:echo", "Trying to execute items:echo as Query, but it is defined as Action."),
    ]
    for kind, path, message in cases:
        body = post(backend, kind, {"path": path, "args": {"name": "never"}}).json()
        assert body == {"status": "error", "errorMessage": message, "logLines": []}
    assert post(backend, "query", {"path": "items:list", "args": {}}).json()["value"] == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "BadJsonBody"),
        ("[1, 2]", "BadJsonBody"),
        ({"args": {}}, "BadJsonBody"),
        ({"path": 5, "args": {}}, "BadJsonBody"),
        ({"path": "items:list"}, "BadRequest"),
        ({"path": "items:list", "args": "x"}, "BadRequest"),
        ({"path": "items:list", "args": [{}, {}]}, "BadRequest"),
        ({"path": "items:list", "args": {}, "format": "xml"}, "BadRequest"),
        ({"path": "items:list", "args": {"a": {"$integer": 1}}}, "BadRequest"),
    ],
)
def test_malformed_requests_get_400(backend: LocalConvex, body: object, code: str) -> None:
    r = post(backend, "query", body)
    assert r.status_code == 400
    assert r.json()["code"] == code and r.json()["message"]


def test_unknown_routes_and_methods(backend: LocalConvex) -> None:
    assert requests.post(f"{backend.url}/api/run/items/list", json={"args": {}}, timeout=5).status_code == 404
    assert requests.get(f"{backend.url}/", timeout=5).status_code == 404
    assert requests.get(f"{backend.url}/api/query", timeout=5).status_code == 405


def test_worker_token_is_passed_through(functions_dir: Path) -> None:
    with LocalConvex(functions_dir=functions_dir, token="s3cret") as server:
        assert ConvexHttpClient(server.url).query("items:token") == "s3cret"
        assert "s3cret" not in server.stderr_text()
    with LocalConvex(functions_dir=functions_dir, token=None, env={"FONDATION_WORKER_TOKEN": "x"}) as server:
        assert ConvexHttpClient(server.url).query("items:token") is None


def test_concurrent_mutations_are_all_applied(functions_dir: Path, tmp_path: Path) -> None:
    threads, per_thread = 8, 25
    with LocalConvex(functions_dir=functions_dir, state_file=tmp_path / "state.json") as server:
        ids: list[str] = []
        errors: list[BaseException] = []

        def work(t: int) -> None:
            client = ConvexHttpClient(server.url)
            try:
                for i in range(per_thread):
                    ids.append(client.mutation("items:add", {"name": f"{t}-{i}"}))
            except BaseException as e:
                errors.append(e)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        assert len(set(ids)) == threads * per_thread
        names = {d["name"] for d in ConvexHttpClient(server.url).query("items:list")}
        assert names == {f"{t}-{i}" for t in range(threads) for i in range(per_thread)}
        # Every acknowledged mutation is on disk: a crash loses none of them.
        server.kill()
        server.start()
        assert {d["_id"] for d in ConvexHttpClient(server.url).query("items:list")} == set(ids)


# ---------------------------------------------------------------------------- state file


def test_state_survives_sigterm_restart(functions_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    server = LocalConvex(functions_dir=functions_dir, state_file=state).start()
    try:
        assert "does not exist; starting empty" in server.stderr_text()
        client = ConvexHttpClient(server.url)
        a = client.mutation("items:add", {"name": "a"})
        b = client.mutation("items:add", {"name": "b", "n": ConvexInt64(2**40)})
        x = client.mutation("items:addOther", {"x": 1.5})
        client.mutation("items:remove", {"id": a})
        with pytest.raises(ConvexError):
            client.mutation("items:fail")  # burns an id, then rolls back
        before = client.query("items:list")
        port = server.port

        assert server.stop() == 0
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        server.start()
        assert server.port == port
        assert "restored state" in server.stderr_text()
        client = ConvexHttpClient(server.url)
        assert client.query("items:list") == before  # same _ids, same _creationTime, same fields
        assert client.query("items:get", {"id": b})["n"] == 2**40
        assert client.query("items:get", {"id": a}) is None
        c = client.mutation("items:add", {"name": "c"})
        assert counter(c) > max(counter(i) for i in (a, b, x))
        assert [d["_id"] for d in client.query("items:list")] == [b, c]
    finally:
        server.kill()


def test_acknowledged_mutation_survives_sigkill(functions_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    server = LocalConvex(functions_dir=functions_dir, state_file=state).start()
    try:
        client = ConvexHttpClient(server.url)
        first = client.mutation("items:add", {"name": "first"})
        second = client.mutation("items:add", {"name": "second"})
        server.kill()  # right after the acknowledgement, no chance to flush
        server.start()
        client = ConvexHttpClient(server.url)
        assert [d["_id"] for d in client.query("items:list")] == [first, second]
        third = client.mutation("items:add", {"name": "third"})
        assert third not in (first, second) and counter(third) > counter(second)
        server.kill()
        server.start()
        assert [d["name"] for d in ConvexHttpClient(server.url).query("items:list")] == [
            "first",
            "second",
            "third",
        ]
    finally:
        server.kill()


def test_scheduled_functions_survive_restarts(functions_dir: Path, tmp_path: Path) -> None:
    server = LocalConvex(functions_dir=functions_dir, state_file=tmp_path / "state.json").start()
    try:
        client = ConvexHttpClient(server.url)
        client.mutation("items:later", {"name": "ran", "ms": 0})
        deadline = time.monotonic() + 5
        while [d["name"] for d in client.query("items:list")] != ["ran"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the server snapshots again once the scheduled function has run
        client.mutation("items:later", {"name": "pending", "ms": 1500})
        server.kill()
        server.start()
        client = ConvexHttpClient(server.url)
        assert [d["name"] for d in client.query("items:list")] == ["ran"]  # ran exactly once
        deadline = time.monotonic() + 10
        while [d["name"] for d in client.query("items:list")] != ["ran", "pending"]:
            assert time.monotonic() < deadline, "the pending scheduled function was not run after the restart"
            time.sleep(0.05)
    finally:
        server.kill()


def test_corrupt_state_file_is_a_clear_error(functions_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    server = LocalConvex(functions_dir=functions_dir, state_file=state)
    with pytest.raises(RuntimeError, match="exited with 1") as raised:
        server.start()
    assert f"state file {state} is corrupt" in str(raised.value)
    state.write_text(
        json.dumps(
            {
                "version": 1,
                "nextIdCounter": 10001,
                "tables": {"items": [{"_id": "10000other"}]},
                "scheduled": [],
            }
        )
    )
    with pytest.raises(RuntimeError, match="is corrupt"):
        server.start()


def test_bad_flags_exit_2() -> None:
    for args in (["--bogus"], ["--address", "nope"], ["--address"], ["--address", "127.0.0.1:99999"]):
        result = subprocess.run(
            ["node", "--import", "tsx", str(SERVER), *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("localconvex: "), (
            result.stderr
        )
        assert result.stdout == ""


def test_port_in_use_is_a_clear_error(backend: LocalConvex) -> None:
    with pytest.raises(RuntimeError, match=r"cannot listen on 127\.0\.0\.1"):
        LocalConvex(functions_dir=backend.functions_dir, port=backend.port).start()


# ---------------------------------------------------------------------------- sync protocol (WebSocket)
# The official Python client (ConvexClient: the Rust client, over ws://…/api/sync); the JS client's
# path (/api/<version>/sync) is tested by localconvex/sync.test.ts.


def updates_until(subscription: QuerySubscription, ok: Callable[[Any], bool], timeout: float = 30) -> Any:
    """The first value of the subscription that satisfies ok (async for: it releases the GIL)."""

    async def wait() -> Any:
        async for value in subscription:
            if ok(value):
                return value
        raise AssertionError("the subscription ended")

    return asyncio.run(asyncio.wait_for(wait(), timeout))


def names(items: list[dict]) -> list[str]:
    return sorted(item["name"] for item in items)


def test_sync_subscription_follows_every_commit(backend: LocalConvex) -> None:
    client = ConvexClient(backend.url)
    items = client.subscribe("items:list", {})
    assert updates_until(items, lambda value: True) == []
    client.mutation("items:add", {"name": "over the socket"})
    ConvexHttpClient(backend.url).mutation("items:add", {"name": "over HTTP"})
    updates_until(items, lambda value: names(value) == ["over HTTP", "over the socket"])
    # A scheduled function commits outside any call: subscribers see it too.
    client.mutation("items:later", {"name": "scheduled", "ms": 0})
    updates_until(items, lambda value: "scheduled" in names(value))
    assert client.query("items:list", {}) and client.action("items:echo", {"value": [1, "a"]}) == [1, "a"]


def test_usage_counts_every_execution_http_socket_subscription_reruns_and_scheduled(backend: LocalConvex) -> None:
    assert backend.reset_usage() == {"functions": {}, "limitErrors": 0}
    client = ConvexClient(backend.url)
    items = client.subscribe("items:list", {})
    assert updates_until(items, lambda value: True) == []
    ConvexHttpClient(backend.url).mutation("items:add", {"name": "over HTTP"})
    updates_until(items, lambda value: names(value) == ["over HTTP"])
    client.mutation("items:later", {"name": "scheduled", "ms": 0})
    updates_until(items, lambda value: "scheduled" in names(value))
    client.action("items:echo", {"value": 1})

    functions = backend.usage()["functions"]
    assert functions["items:add"]["calls"] == 1
    assert functions["items:add"]["documentsWritten"] == 1
    assert functions["items:add"]["bytesWritten"] > 0
    assert functions["items:later"]["calls"] == 1
    # The scheduled function is an execution of its own, and so is the action.
    assert functions["items:addLater"]["calls"] == 1
    assert functions["items:addLater"]["documentsWritten"] == 1
    assert functions["items:echo"]["calls"] == 1
    # The subscription's first run and its re-runs after each commit: at least 3, reading 0, 1, then 2 items.
    listed = functions["items:list"]
    assert listed["calls"] >= 3
    assert listed["documentsRead"] >= 3
    assert listed["maxDocumentsRead"] == 2
    assert listed["bytesRead"] > 0

    # A plain HTTP query is one execution, reading one document.
    [item] = [item for item in client.query("items:list", {}) if item["name"] == "over HTTP"]
    post(backend, "query", {"path": "items:get", "args": {"id": item["_id"]}})
    got = backend.usage()["functions"]["items:get"]
    assert (got["calls"], got["documentsRead"], got["maxDocumentsRead"], got["documentsWritten"]) == (1, 1, 1, 0)
    assert 0 < got["bytesRead"] == got["maxBytesRead"]

    # Only the admin resets it.
    assert requests.post(f"{backend.url}/_localconvex/usage/reset", timeout=10).status_code == 401
    assert backend.usage()["functions"] != {}
    assert backend.reset_usage() == {"functions": {}, "limitErrors": 0}


def test_sync_identities_errors_and_the_admin_key_as_over_http(backend: LocalConvex) -> None:
    anonymous = ConvexClient(backend.url)
    assert anonymous.query("items:whoami", {}) is None
    with pytest.raises(ConvexError) as raised:
        anonymous.mutation("items:fail", {})
    assert raised.value.data == {"code": "x", "message": "y"}
    with pytest.raises(Exception, match="Could not find public function for 'items:secret'"):
        anonymous.mutation("items:secret", {})
    with pytest.raises(Exception, match="Uncaught Error: boom") as failed:
        anonymous.query("items:boom", {})
    assert not isinstance(failed.value, ConvexError)  # a plain error carries no errorData

    alice = ConvexClient(backend.url)
    alice.set_auth(identity_token("alice"))
    assert alice.query("items:whoami", {})["subject"] == "alice"

    admin = ConvexClient(backend.url)
    admin.set_admin_auth(backend.admin_key)
    assert admin.mutation("items:secret", {}) == "secret"


def test_a_restored_scheduled_function_reaches_subscribers_with_no_other_commit(functions_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """As a lease reaper restored after an outage: the agents subscribed, and nothing else commits."""
    server = LocalConvex(functions_dir=functions_dir, state_file=tmp_path / "state.json").start()
    try:
        ConvexHttpClient(server.url).mutation("items:later", {"name": "restored", "ms": 1500})
        server.kill()
        server.start()
        items = ConvexClient(server.url).subscribe("items:list", {})
        updates_until(items, lambda value: names(value) == ["restored"])
    finally:
        server.kill()


def test_sync_timestamp_survives_restarts_and_clients_reconnect(functions_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    server = LocalConvex(functions_dir=functions_dir, state_file=state).start()
    try:
        client = ConvexClient(server.url)
        items = client.subscribe("items:list", {})
        client.mutation("items:add", {"name": "before"})
        updates_until(items, lambda value: names(value) == ["before"])
        saved = json.loads(state.read_text())["ts"]
        server.stop()
        server.start()
        # The client saw the old server's timestamps; the new one's must not be lower, or it gives up.
        ConvexHttpClient(server.url).mutation("items:add", {"name": "after"})
        updates_until(items, lambda value: names(value) == ["after", "before"])
        assert decode_ts(json.loads(state.read_text())["ts"]) > decode_ts(saved)
    finally:
        server.kill()


def decode_ts(value: dict) -> int:
    return int.from_bytes(base64.b64decode(value["$integer"]), "little", signed=True)


# ---------------------------------------------------------------------------- the real convex/ functions


def test_real_functions_keep_job_ids_across_a_crash(tmp_path: Path) -> None:
    token = "test-worker-token"
    server = LocalConvex(state_file=tmp_path / "state.json", token=token).start()
    try:
        client = ConvexHttpClient(server.url)
        client.set_admin_auth(server.admin_key)
        job_id = client.mutation(
            "operator:enqueue", {"repositoryUrl": "https://example.com/r.git", "prompt": "p"}
        )
        assert client.query("operator:get", {"jobId": job_id})["status"] == "pending"
        claimed = client.mutation("worker:claim", {"workerToken": token, "workerId": "w1", "leaseMs": 60_000})
        assert claimed["job"]["_id"] == job_id
        with pytest.raises(ConvexError) as raised:
            client.mutation("worker:claim", {"workerToken": "wrong", "workerId": "w1", "leaseMs": 60_000})
        assert raised.value.data["code"] == "unauthorized"

        server.kill()
        server.start()
        client = ConvexHttpClient(server.url)
        client.set_admin_auth(server.admin_key)
        # The agent keeps going with the same job id and lease token.
        beat = client.mutation(
            "worker:heartbeat",
            {"workerToken": token, "jobId": job_id, "leaseToken": claimed["leaseToken"], "leaseMs": 60_000},
        )
        assert beat["ok"] is True
        assert client.query("operator:get", {"jobId": job_id})["status"] == "running"
        other = client.mutation("operator:enqueue", {"repositoryUrl": "https://example.com/s.git", "prompt": "p"})
        assert other != job_id
        assert {j["_id"] for j in client.query("operator:list", {})} == {job_id, other}
    finally:
        server.kill()


def test_default_functions_dir_is_the_repositorys_convex() -> None:
    with LocalConvex() as server:
        body = requests.post(
            f"{server.url}/api/query", json={"path": "nope:nope", "args": {}}, timeout=5
        ).json()
        assert body["status"] == "error"
