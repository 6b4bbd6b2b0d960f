// What a platform's UI needs of the queue: pages of jobs by owner, repository and status, pages of a
// job's documents, a cancel's reason, the host's metadata, and bad input refused before any write.
import { convexTest } from "convex-test";
import { describe, expect, test, vi } from "vitest";
import { TOKEN, useFakeClockAndWorkerToken } from "../component-test-setup";
import { api } from "./_generated/api";
import rules from "./rules.json";
import schema from "./schema";

useFakeClockAndWorkerToken();
const modules = import.meta.glob(["./**/*.*s", "!./**/*.test.ts"]);
const REPO = "https://github.com/acme/widgets";
const LEASE = { leaseMs: 30_000 };

function setup() {
  const t = convexTest(schema, modules);
  const enqueue = async (extra: Record<string, unknown> = {}) => {
    const id = await t.mutation(api.jobs.enqueue, { repositoryUrl: REPO, prompt: "p", ...extra });
    vi.advanceTimersByTime(1); // distinct createdAt: "newest first" is well defined
    return id;
  };
  const claim = async () => {
    const claimed = (await t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", ...LEASE }))!;
    return { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken };
  };
  const jobCount = () => t.run(async (ctx) => (await ctx.db.query("jobs").collect()).length);
  return { t, enqueue, claim, jobCount };
}

/** Every page of jobs:list for `filters`, `numItems` at a time. */
async function allPages(t: ReturnType<typeof setup>["t"], filters: Record<string, unknown>, numItems: number) {
  const pages: string[][] = [];
  let cursor: string | null = null;
  for (;;) {
    const result: any = await t.query(api.jobs.list, { ...filters, paginationOpts: { numItems, cursor } });
    pages.push(result.page.map((job: { _id: string }) => job._id));
    if (result.isDone) return pages;
    cursor = result.continueCursor;
  }
}

describe("jobs:list", () => {
  test("pages through every combination of owner, repository and status, newest first", async () => {
    const { t, enqueue, claim } = setup();
    const made: { id: string; userId: string; repositoryId: string }[] = [];
    for (const userId of ["alice", "bob"]) {
      for (const repositoryId of ["r1", "r2"]) {
        for (let i = 0; i < 3; i++) made.push({ id: await enqueue({ userId, repositoryId }), userId, repositoryId });
      }
    }
    const running = (await claim()).jobId; // the oldest: alice's first of r1
    const statusOf = (id: string) => (id === running ? "running" : "pending");
    const newestFirst = [...made].reverse();
    for (const userId of [undefined, "alice"]) {
      for (const repositoryId of [undefined, "r1"]) {
        for (const status of [undefined, "pending", "running"]) {
          const filters = { userId, repositoryId, status };
          const expected = newestFirst
            .filter((job) => (userId === undefined || job.userId === userId) && (repositoryId === undefined || job.repositoryId === repositoryId))
            .filter((job) => status === undefined || statusOf(job.id) === status)
            .map((job) => job.id);
          const pages = await allPages(t, filters, 2);
          expect(pages.flat(), JSON.stringify(filters)).toEqual(expected);
          expect(pages.every((page) => page.length <= 2)).toBe(true);
        }
      }
    }
  });

  test("a repository's latest job is one read, however many jobs its owner has", async () => {
    const { t, enqueue } = setup();
    const old = await enqueue({ userId: "alice", repositoryId: "old-repo" });
    for (let i = 0; i < 30; i++) await enqueue({ userId: "alice", repositoryId: `repo-${i}` });
    const latest = await t.query(api.jobs.list, { userId: "alice", repositoryId: "old-repo", paginationOpts: { numItems: 1, cursor: null } });
    expect(latest.page.map((job) => job._id)).toEqual([old]);
  });

  test.each([
    [{ numItems: 0, cursor: null }, /paginationOpts.numItems must be a whole number from 1 to 200/],
    [{ numItems: rules.limits.maxPageSize + 1, cursor: null }, /paginationOpts.numItems/],
    [{ numItems: 10, cursor: "not a cursor" }, /paginationOpts.cursor .*not a cursor.* is not a cursor of this list/],
  ])("refuses bad paginationOpts %j as invalid_argument", async (paginationOpts, message) => {
    const { t, enqueue } = setup();
    await enqueue();
    const call = t.query(api.jobs.list, { paginationOpts });
    await expect(call).rejects.toThrow(message);
    await expect(call).rejects.toMatchObject({ data: { code: "invalid_argument" } });
  });
});

describe("docs:byJob", () => {
  test("pages through a completed job's documents in chapter order", async () => {
    const { t, enqueue, claim } = setup();
    await enqueue();
    const lease = await claim();
    const docs = [3, 0, 4, 1, 2].map((i) => ({ title: `T${i}`, slug: `s${i}`, kind: "chapter" as const, chapterIndex: i, content: `# ${i}` }));
    await t.mutation(api.worker.saveDocs, { ...lease, docs });
    await t.mutation(api.worker.complete, lease);
    const slugs: string[][] = [];
    let cursor: string | null = null;
    for (;;) {
      const result: any = await t.query(api.docs.byJob, { jobId: lease.jobId, paginationOpts: { numItems: 2, cursor } });
      slugs.push(result.page.map((doc: { slug: string }) => doc.slug));
      if (result.isDone) break;
      cursor = result.continueCursor;
    }
    expect(slugs.flat()).toEqual(["s0", "s1", "s2", "s3", "s4"]);
    expect(slugs[0]).toEqual(["s0", "s1"]);
    await expect(t.query(api.docs.byJob, { jobId: lease.jobId, paginationOpts: { numItems: 2, cursor: "{bad" } })).rejects.toThrow(/not a cursor/);
    // Another user's job has no documents for them, and the page size is still checked.
    expect(await t.query(api.docs.byJob, { jobId: lease.jobId, userId: "eve", paginationOpts: { numItems: 2, cursor: null } })).toEqual({ page: [], isDone: true, continueCursor: "" });
    await expect(t.query(api.docs.byJob, { jobId: lease.jobId, userId: "eve", paginationOpts: { numItems: 0, cursor: null } })).rejects.toThrow(/numItems/);
  });
});

describe("a cancel's reason", () => {
  test("is the canceled job's error, whether it was pending or running", async () => {
    const { t, enqueue, claim } = setup();
    const pending = await enqueue();
    expect(await t.mutation(api.jobs.cancel, { jobId: pending, reason: "wrong branch" })).toEqual({ status: "canceled" });
    expect(await t.query(api.jobs.get, { jobId: pending })).toMatchObject({ status: "canceled", error: "wrong branch" });

    await enqueue();
    const lease = await claim();
    expect(await t.mutation(api.jobs.cancel, { jobId: lease.jobId, reason: "no longer needed" })).toEqual({ status: "cancel_requested" });
    expect(await t.query(api.jobs.get, { jobId: lease.jobId })).toMatchObject({ status: "running", cancelRequested: true });
    await t.mutation(api.worker.canceled, lease);
    expect(await t.query(api.jobs.get, { jobId: lease.jobId })).toMatchObject({ status: "canceled", error: "no longer needed" });
  });

  test("over its limit is refused and nothing changes", async () => {
    const { t, enqueue } = setup();
    const jobId = await enqueue();
    const reason = "x".repeat(rules.limits.maxReasonLength + 1);
    await expect(t.mutation(api.jobs.cancel, { jobId, reason })).rejects.toMatchObject({ data: { code: "invalid_argument" } });
    expect(await t.query(api.jobs.get, { jobId })).toMatchObject({ status: "pending" });
  });
});

describe("enqueue", () => {
  test("keeps the host's metadata and returns it with the job", async () => {
    const { t, enqueue } = setup();
    const metadata = { platformJobId: "j_17", docsCount: 0, tags: ["a", "b"] };
    const jobId = await enqueue({ metadata });
    expect(await t.query(api.jobs.get, { jobId })).toMatchObject({ metadata });
    expect((await t.query(api.jobs.list, { paginationOpts: { numItems: 1, cursor: null } })).page[0]).toMatchObject({ metadata });
  });

  test.each([
    ["oversized metadata", { metadata: { blob: "x".repeat(rules.limits.maxMetadataBytes) } }, /metadata is too large/],
    ["a shell command after the URL", { repositoryUrl: "https://github.com/a/b;rm -rf /" }, /not a git repository URL/],
    ["a query", { repositoryUrl: "https://github.com/a/b?ref=x" }, /not a git repository URL/],
    ["a command substitution", { repositoryUrl: "https://github.com/a/$(id)" }, /not a git repository URL/],
    ["no repository path", { repositoryUrl: "https://github.com" }, /not a git repository URL/],
  ])("refuses %s as invalid_argument, writing nothing", async (_case, extra, message) => {
    const { enqueue, jobCount } = setup();
    await expect(enqueue(extra)).rejects.toThrow(message);
    await expect(enqueue(extra)).rejects.toMatchObject({ data: { code: "invalid_argument" } });
    expect(await jobCount()).toBe(0);
  });

  test.each(["https://github.com/a/b", "https://gitlab.example.org/group/sub/repo.git", "https://example.com/r.git"])(
    "accepts the git URL %s",
    async (repositoryUrl) => {
      const { enqueue, jobCount } = setup();
      await enqueue({ repositoryUrl });
      expect(await jobCount()).toBe(1);
    },
  );
});

test("a completed job has done all its steps", async () => {
  const { t, enqueue, claim } = setup();
  await enqueue();
  const lease = await claim();
  await t.mutation(api.worker.heartbeat, { ...lease, ...LEASE, status: "gathering", currentStep: 5, totalSteps: 6 });
  await t.mutation(api.worker.complete, lease);
  expect(await t.query(api.jobs.get, { jobId: lease.jobId })).toMatchObject({ status: "completed", currentStep: 6, totalSteps: 6 });
});
