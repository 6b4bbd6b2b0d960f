// migrations:backfill on a deployment holding jobs of the earlier shape (no shard, no counters):
// nothing lost, the counters exact afterwards, stalled leases reaped, in batches.
import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, expectCountersExact, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";
import type { Doc } from "./_generated/dataModel";
import { ALL_STATUSES, isActive } from "./lib";

useFakeClockAndWorkerToken();

type OldJob = Omit<Doc<"jobs">, "_id" | "_creationTime" | "shard">;

/** A job as the earlier functions wrote it: every status, some owners, 20 KB prompts (so that batches fill up). */
function oldJob(i: number): OldJob {
  const status = ALL_STATUSES[i % ALL_STATUSES.length];
  const now = Date.now();
  const lease = isActive(status) ? { leaseOwner: "old-agent", leaseToken: `1-old${i}`, leaseExpiresAt: now + LEASE } : {};
  return {
    repositoryUrl: "https://github.com/acme/widgets",
    prompt: "x".repeat(20_000),
    userId: ["alice", "bob", undefined][i % 3],
    status,
    attempts: isActive(status) ? 1 : 0,
    maxAttempts: 3,
    availableAt: now - i,
    createdAt: now - i,
    updatedAt: now,
    ...lease,
  };
}

test("every job of the earlier shape gets a shard and is counted, in batches, traffic going on meanwhile", async () => {
  const { t, enqueue } = workerQueue();
  const OLD = 600;
  await t.run(async (ctx) => {
    for (let i = 0; i < OLD; i++) await ctx.db.insert("jobs", oldJob(i));
  });
  const allJobs = () => t.run(async (ctx) => await ctx.db.query("jobs").collect());
  expect((await t.query(api.jobs.stats, {})).counts.pending).toBe(0); // uncounted yet
  expect(await t.query(api.migrations.backfillPending, {})).toBe(true);

  const first = await t.mutation(api.migrations.backfill, {});
  // 4 MiB of 20 KB jobs: about 200 a batch, the rest scheduled.
  expect(first.more).toBe(true);
  expect(first.backfilled).toBeGreaterThan(100);
  expect(first.backfilled).toBeLessThan(OLD);
  // A job queued meanwhile is counted once, by the new enqueue.
  await enqueue();
  await t.finishAllScheduledFunctions(vi.runAllTimers);

  expect(await t.query(api.migrations.backfillPending, {})).toBe(false);
  const jobs = await allJobs();
  expect(jobs).toHaveLength(OLD + 1);
  expect(jobs.every((job) => job.shard !== undefined && job.shard >= 0 && job.shard < 4)).toBe(true);
  await expectCountersExact(t, jobs);
  // Running it again changes nothing.
  expect(await t.mutation(api.migrations.backfill, {})).toEqual({ backfilled: 0, more: false });
  await expectCountersExact(t, await allJobs());
}, 60_000);

test("a job leased before the upgrade is reaped when its lease runs out; a pending one is claimed", async () => {
  const { t } = workerQueue();
  const [active, pending] = await t.run(async (ctx) => [await ctx.db.insert("jobs", oldJob(1)), await ctx.db.insert("jobs", oldJob(0))]);
  expect(await t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: LEASE })).toBeNull();
  await t.mutation(api.migrations.backfill, {});
  expect((await t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: LEASE }))?.job._id).toBe(pending);
  vi.advanceTimersByTime(LEASE + 1);
  await t.finishAllScheduledFunctions(vi.runAllTimers);
  expect(await t.query(api.jobs.get, { jobId: active })).toMatchObject({ status: "pending", leaseExpiries: 1 });
  await expectCountersExact(t, await t.run(async (ctx) => await ctx.db.query("jobs").collect()));
});
