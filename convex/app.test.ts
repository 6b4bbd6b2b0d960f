// The repository's app over the registered queue component: who may call what.
import { convexTest } from "convex-test";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { registerQueue } from "../queue/test";
import { api, internal } from "./_generated/api";
import schema from "./schema";

const modules = import.meta.glob("./**/*.ts");
const TOKEN = "test-worker-token";
const REPO = "https://github.com/acme/widgets";
const job = { repositoryUrl: REPO, prompt: "make a course" };
const paginationOpts = { numItems: 50, cursor: null };

beforeEach(() => {
  vi.useFakeTimers();
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
  delete process.env.FONDATION_MAX_UNFINISHED_JOBS_PER_USER;
});
afterEach(() => vi.useRealTimers());

function setup() {
  const t = convexTest(schema, modules);
  registerQueue(t);
  const alice = t.withIdentity({ subject: "alice", name: "Alice" });
  const bob = t.withIdentity({ subject: "bob", name: "Bob" });
  const claim = () => t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: 30_000 });
  /** Runs alice's job to its end through the worker functions, as an agent would. */
  const finish = async (end: "complete" | "fail", retryable = true) => {
    const c = (await claim())!;
    const lease = { workerToken: TOKEN, jobId: c.job._id, leaseToken: c.leaseToken };
    if (end === "complete") {
      await t.mutation(api.worker.saveDocs, { ...lease, docs: [{ title: "One", slug: "one", kind: "chapter", chapterIndex: 1, content: "# One" }] });
      await t.mutation(api.worker.complete, lease);
    } else {
      await t.mutation(api.worker.fail, { ...lease, error: "boom", errorKind: "crashed", retryable });
    }
    return c.job._id;
  };
  return { t, alice, bob, claim, finish };
}

describe("jobs:* and docs:* answer signed-in users only", () => {
  const someId = "10000;jobs";
  test.each([
    ["jobs:enqueue", (t: any) => t.mutation(api.jobs.enqueue, job)],
    ["jobs:get", (t: any) => t.query(api.jobs.get, { jobId: someId })],
    ["jobs:list", (t: any) => t.query(api.jobs.list, { paginationOpts })],
    ["jobs:stats", (t: any) => t.query(api.jobs.stats, {})],
    ["jobs:cancel", (t: any) => t.mutation(api.jobs.cancel, { jobId: someId })],
    ["jobs:retry", (t: any) => t.mutation(api.jobs.retry, { jobId: someId })],
    ["docs:byJob", (t: any) => t.query(api.docs.byJob, { jobId: someId, paginationOpts })],
    ["jobs:logs", (t: any) => t.query(api.jobs.logs, { jobId: someId })],
  ])("%s refuses an unauthenticated call", async (_name, call) => {
    const { t } = setup();
    await expect(call(t)).rejects.toThrow(/unauthorized|sign in first/);
  });
});

describe("a user's jobs are theirs alone", () => {
  test("user A cannot see, cancel or retry user B's job, nor read B's documents", async () => {
    const { alice, bob, finish } = setup();
    const pending = await bob.mutation(api.jobs.enqueue, job);
    expect(await alice.query(api.jobs.get, { jobId: pending })).toBeNull();
    expect((await alice.query(api.jobs.list, { paginationOpts })).page).toEqual([]);
    expect((await alice.query(api.jobs.stats, {})).counts.pending).toBe(0);
    await expect(alice.mutation(api.jobs.cancel, { jobId: pending })).rejects.toThrow(/does not exist/);
    expect(await bob.query(api.jobs.get, { jobId: pending })).toMatchObject({ status: "pending" });

    const done = await finish("complete");
    expect(done).toBe(pending);
    expect((await alice.query(api.docs.byJob, { jobId: done, paginationOpts })).page).toEqual([]);
    expect((await bob.query(api.docs.byJob, { jobId: done, paginationOpts })).page).toMatchObject([{ slug: "one" }]);

    await bob.mutation(api.jobs.enqueue, { ...job, maxAttempts: 1 });
    const failed = await finish("fail");
    await expect(alice.mutation(api.jobs.retry, { jobId: failed })).rejects.toThrow(/does not exist/);
    expect(await bob.mutation(api.jobs.retry, { jobId: failed })).toEqual({ status: "pending" });
    expect((await bob.query(api.jobs.list, { paginationOpts })).page.map((j) => j.userId)).toEqual([expect.stringContaining("bob"), expect.stringContaining("bob")]);
  });

  test("a user's dedupKey matches only their own jobs", async () => {
    const { alice, bob } = setup();
    const mine = await alice.mutation(api.jobs.enqueue, { ...job, dedupKey: "k" });
    expect(await alice.mutation(api.jobs.enqueue, { ...job, dedupKey: "k" })).toBe(mine);
    expect(await bob.mutation(api.jobs.enqueue, { ...job, dedupKey: "k" })).not.toBe(mine);
  });

  test("users retry only failures a retry may cure", async () => {
    const { alice, finish } = setup();
    await alice.mutation(api.jobs.enqueue, { ...job, maxAttempts: 1 });
    const permanent = await finish("fail", false);
    await expect(alice.mutation(api.jobs.retry, { jobId: permanent })).rejects.toThrow(/a retry may cure/);
    const canceled = await alice.mutation(api.jobs.enqueue, job);
    await alice.mutation(api.jobs.cancel, { jobId: canceled });
    await expect(alice.mutation(api.jobs.retry, { jobId: canceled })).rejects.toThrow(/a retry may cure/);
  });

  test("a user has at most the configured number of unfinished jobs", async () => {
    process.env.FONDATION_MAX_UNFINISHED_JOBS_PER_USER = "2";
    const { alice, bob, claim } = setup();
    const first = await alice.mutation(api.jobs.enqueue, job);
    await claim(); // active jobs count too
    await alice.mutation(api.jobs.enqueue, job);
    await expect(alice.mutation(api.jobs.enqueue, job)).rejects.toThrow(/at most 2 unfinished jobs per user/);
    await bob.mutation(api.jobs.enqueue, job); // another user's count is their own
    await alice.mutation(api.jobs.cancel, { jobId: first }); // a cancel request leaves it unfinished
    await expect(alice.mutation(api.jobs.enqueue, job)).rejects.toThrow(/at most 2/);
  });
});

describe("operator:* reach every job", () => {
  test("the operator enqueues, lists, reads, cancels and retries anyone's job", async () => {
    const { t, bob, finish } = setup();
    const bobs = await bob.mutation(api.jobs.enqueue, job);
    const own = await t.mutation(internal.operator.enqueue, job);
    expect((await t.query(internal.operator.list, {})).map((j) => j._id)).toEqual([own, bobs]);
    expect(await t.query(internal.operator.get, { jobId: bobs })).toMatchObject({ status: "pending" });
    expect((await t.query(internal.operator.stats, {})).counts.pending).toBe(2);
    expect(await t.mutation(internal.operator.cancel, { jobId: own })).toEqual({ status: "canceled" });
    expect(await t.mutation(internal.operator.retry, { jobId: own })).toEqual({ status: "pending" });
    const done = await finish("complete");
    expect((await t.query(internal.operator.docs, { jobId: done, paginationOpts })).page).toMatchObject([{ slug: "one" }]);
  });
});

describe("worker:*", () => {
  test("the app's worker functions are the component's, behind its token check", async () => {
    const { t, alice } = setup();
    await alice.mutation(api.jobs.enqueue, job);
    await expect(t.mutation(api.worker.claim, { workerToken: "wrong", workerId: "w", leaseMs: 30_000 })).rejects.toThrow(/worker token refused/);
    delete process.env.FONDATION_WORKER_TOKEN;
    await expect(t.mutation(api.worker.claim, { workerToken: "", workerId: "w", leaseMs: 30_000 })).rejects.toThrow(/worker token refused/);
  });
});
