// The component at scale, within Convex's limits (convex-test enforcing them with Convex's numbers:
// 16 MiB and 32,000 documents read, 4,096 index ranges, 16 MiB and 16,000 documents written per
// transaction): 100,000 jobs of every status, and a job of 1,000 documents of 50 KB. Past a limit
// Convex refuses the call, so every function called here must stay under them however large the queue.
import { convexTest } from "convex-test";
import { expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import type { Doc } from "./_generated/dataModel";
import { ALL_STATUSES, SHARDS, isActive } from "./lib";
import schema from "./schema";

const modules = import.meta.glob(["./**/*.*s", "!./**/*.test.ts"]);
const TOKEN = "test-worker-token";
const LEASE = 600_000;
const JOBS = 100_000;
const INSERT_BATCH = 10_000;
const DOCS = 1_000;
const DOC_BYTES = 50 * 1024;
const USERS = 100;
const worker = { workerToken: TOKEN };
const page = (numItems: number, cursor: string | null = null) => ({ numItems, cursor });

type NewJob = Omit<Doc<"jobs">, "_id" | "_creationTime">;

function job(i: number, now: number): NewJob {
  const status = ALL_STATUSES[i % ALL_STATUSES.length];
  const lease = isActive(status) ? { leaseOwner: "busy", leaseToken: `1-busy${i}`, leaseExpiresAt: now + LEASE } : {};
  return {
    userId: `user-${i % USERS}`,
    repositoryId: `repo-${i % 1_000}`,
    repositoryUrl: "https://github.com/acme/widgets",
    prompt: `make a course ${i} `.padEnd(200, "."),
    status,
    attempts: isActive(status) ? 1 : 0,
    maxAttempts: 3,
    availableAt: now - JOBS + i,
    createdAt: now - JOBS + i,
    updatedAt: now,
    shard: i % SHARDS,
    ...lease,
  };
}

test("100,000 jobs of every status and a job of 1,000 documents of 50 KB: every function within Convex's limits", async () => {
  vi.useFakeTimers();
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
  try {
    const t = convexTest({ schema, modules, transactionLimits: true });
    const now = Date.now();
    // The queue as the functions would have left it: jobs, and their counters.
    const counts = new Map<string, number>();
    for (let from = 0; from < JOBS; from += INSERT_BATCH) {
      await t.run(async (ctx) => {
        for (let i = from; i < from + INSERT_BATCH; i++) {
          const j = job(i, now);
          await ctx.db.insert("jobs", j);
          for (const scope of [`shard:${j.shard}`, `user:${j.userId}`]) counts.set(`${scope} ${j.status}`, (counts.get(`${scope} ${j.status}`) ?? 0) + 1);
        }
      });
    }
    await t.run(async (ctx) => {
      for (const [key, count] of counts) {
        const [scope, status] = key.split(" ");
        await ctx.db.insert("counters", { scope, status: status as Doc<"jobs">["status"], count });
      }
    });
    const perStatus = JOBS / ALL_STATUSES.length;

    // The producers' and the UI's functions.
    const stats = await t.query(api.jobs.stats, {});
    expect(stats.counts).toEqual(Object.fromEntries(ALL_STATUSES.map((status) => [status, perStatus])));
    expect((await t.query(api.jobs.stats, { userId: "user-8" })).counts.pending).toBeGreaterThan(0);
    const listed = await t.query(api.jobs.list, { paginationOpts: page(200) });
    expect(listed.page).toHaveLength(200);
    await t.query(api.jobs.list, { userId: "user-8", status: "pending", paginationOpts: page(200) });
    expect((await t.query(api.jobs.list, { paginationOpts: page(200, listed.continueCursor) })).page).toHaveLength(200);
    await t.query(api.jobs.list, { repositoryId: "repo-7", status: "failed", paginationOpts: page(200) });
    const mine = await t.mutation(api.jobs.enqueue, {
      repositoryUrl: "https://github.com/acme/widgets",
      prompt: "p",
      userId: "user-8",
      dedupKey: "k",
      maxUnfinished: 5_000,
    });
    expect(await t.query(api.jobs.get, { jobId: mine, userId: "user-8" })).toMatchObject({ status: "pending" });
    expect(await t.mutation(api.jobs.cancel, { jobId: mine })).toEqual({ status: "canceled" });
    expect(await t.mutation(api.jobs.retry, { jobId: mine })).toEqual({ status: "pending" });

    // The agents' functions.
    const depth = await t.query(api.worker.queueDepth, worker);
    expect(depth).toMatchObject({ pending: perStatus + 1, active: 4 * perStatus, capped: false });
    expect(await t.query(api.worker.nextDue, worker)).toEqual({ pendingAvailableAt: now - JOBS });
    const claimed = (await t.mutation(api.worker.claim, { ...worker, workerId: "w1", leaseMs: LEASE }))!;
    const lease = { ...worker, jobId: claimed.job._id, leaseToken: claimed.leaseToken };
    expect(await t.mutation(api.worker.heartbeat, { ...lease, leaseMs: LEASE, status: "analyzing", logs: [{ level: "info", text: "hi" }] })).toMatchObject({ ok: true });
    expect(await t.mutation(api.worker.saveDocs, { ...lease, docs: [{ title: "T", slug: "t", kind: "chapter", chapterIndex: 0, content: "x" }] })).toEqual({ ok: true, saved: 1 });

    // A job of 1,000 documents of 50 KB, staged (as saveDocs leaves them, see scale.test.ts), then completed.
    const content = "x".repeat(DOC_BYTES);
    for (let from = 0; from < DOCS; from += 200) {
      await t.run(async (ctx) => {
        for (let i = from; i < from + 200; i++) {
          await ctx.db.insert("docs", { jobId: claimed.job._id, leaseToken: claimed.leaseToken, title: `Doc ${i}`, slug: `doc-${i}`, kind: "chapter", chapterIndex: i + 1, content });
        }
      });
    }
    expect(await t.mutation(api.worker.complete, lease)).toEqual({ ok: true });
    // Its documents, a page at a time: however many are asked for, a page stops at about 8 MiB.
    let read = 0;
    let cursor: string | null = null;
    for (let pages = 0; ; pages++) {
      expect(pages).toBeLessThan(20);
      const result: { page: unknown[]; isDone: boolean; continueCursor: string } = await t.query(api.docs.byJob, { jobId: claimed.job._id, paginationOpts: page(200, cursor) });
      // About 8 MiB a page (the document that passes the bound is the last), not the 200 asked for.
      expect(result.page.length).toBeLessThanOrEqual(Math.ceil((8 << 20) / DOC_BYTES) + 1);
      read += result.page.length;
      if (result.isDone) break;
      cursor = result.continueCursor;
    }
    expect(read).toBe(DOCS + 1);

    // Another attempt fails with 1,000 staged documents: they are purged in batches.
    const second = (await t.mutation(api.worker.claim, { ...worker, workerId: "w2", leaseMs: LEASE }))!;
    for (let from = 0; from < DOCS; from += 200) {
      await t.run(async (ctx) => {
        for (let i = from; i < from + 200; i++) {
          await ctx.db.insert("docs", { jobId: second.job._id, leaseToken: second.leaseToken, title: `Doc ${i}`, slug: `doc-${i}`, kind: "chapter", chapterIndex: i, content });
        }
      });
    }
    const secondLease = { ...worker, jobId: second.job._id, leaseToken: second.leaseToken };
    expect(await t.mutation(api.worker.fail, { ...secondLease, error: "boom", errorKind: "cli_failed", retryable: false })).toMatchObject({ ok: true });
    const third = (await t.mutation(api.worker.claim, { ...worker, workerId: "w3", leaseMs: LEASE }))!;
    expect(await t.mutation(api.worker.release, { ...worker, jobId: third.job._id, leaseToken: third.leaseToken, reason: "stopping" })).toEqual({ ok: true });
    // The purge's batches and the claims' reapers (each claim's attempt has ended: no-ops), within the limits.
    await t.finishAllScheduledFunctions(vi.runAllTimers);
    const staged = await t.run(async (ctx) => await ctx.db.query("docs").withIndex("by_job_lease_chapter", (q) => q.eq("jobId", second.job._id)).first());
    expect(staged).toBeNull();
    expect(await t.mutation(api.migrations.backfill, {})).toEqual({ backfilled: 0, more: false });
    expect(await t.query(api.migrations.backfillPending, {})).toBe(false);
    expect((await t.query(api.jobs.stats, {})).counts.failed).toBe(perStatus + 1);
  } finally {
    vi.useRealTimers();
  }
}, 300_000);
