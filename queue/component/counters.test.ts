// The job counters (status.ts) that jobs:stats and worker:queueDepth read: after any sequence of
// the queue's operations, each equals a recount of the jobs.
import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, expectCountersExact, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";
import { ACTIVE_STATUSES } from "./lib";

useFakeClockAndWorkerToken();

const USERS = ["alice", "bob", undefined];
// The statuses the random sequences reached, over all of them.
const seen = new Set<string>();

/** A small seeded generator (mulberry32), so that a failing sequence can be run again. */
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
}

function setup() {
  const { t } = workerQueue();
  const held: { jobId: string; leaseToken: string }[] = [];
  const worker = { workerToken: TOKEN };
  const allJobs = () => t.run(async (ctx) => await ctx.db.query("jobs").collect());
  const operations: Record<string, (pick: () => number) => Promise<unknown>> = {
    enqueue: (pick) =>
      t.mutation(api.jobs.enqueue, {
        repositoryUrl: "https://github.com/acme/widgets",
        prompt: "p",
        userId: USERS[Math.floor(pick() * USERS.length)],
      }),
    claim: async () => {
      const claimed = await t.mutation(api.worker.claim, { ...worker, workerId: "w1", leaseMs: LEASE });
      if (claimed !== null) held.push({ jobId: claimed.job._id, leaseToken: claimed.leaseToken });
    },
    heartbeat: async (pick) => {
      const lease = held[Math.floor(pick() * held.length)];
      if (lease) await t.mutation(api.worker.heartbeat, { ...worker, ...lease, leaseMs: LEASE, status: "analyzing" });
    },
    complete: async (pick) => {
      const lease = held.splice(Math.floor(pick() * held.length), 1)[0];
      if (lease) await t.mutation(api.worker.complete, { ...worker, ...lease });
    },
    fail: async (pick) => {
      const lease = held.splice(Math.floor(pick() * held.length), 1)[0];
      const retryable = pick() < 0.7;
      if (lease) await t.mutation(api.worker.fail, { ...worker, ...lease, error: "boom", errorKind: "cli_failed", retryable });
    },
    release: async (pick) => {
      const lease = held.splice(Math.floor(pick() * held.length), 1)[0];
      const hostFailureKind = pick() < 0.5 ? "disk_full" : undefined;
      if (lease) await t.mutation(api.worker.release, { ...worker, ...lease, reason: "stopping", hostFailureKind });
    },
    cancel: async (pick) => {
      const jobs = (await allJobs()).filter((job) => job.status === "pending" || ACTIVE_STATUSES.includes(job.status as never));
      const job = jobs[Math.floor(pick() * jobs.length)];
      if (job) await t.mutation(api.jobs.cancel, { jobId: job._id, reason: "no longer wanted" });
    },
    acknowledgeCancel: async () => {
      for (const lease of held) {
        const job = await t.query(api.jobs.get, { jobId: lease.jobId });
        if (job?.cancelRequested && ACTIVE_STATUSES.includes(job.status as never)) {
          await t.mutation(api.worker.canceled, { ...worker, ...lease });
        }
      }
    },
    retry: async (pick) => {
      const jobs = (await allJobs()).filter((job) => job.status === "failed" || job.status === "canceled");
      const job = jobs[Math.floor(pick() * jobs.length)];
      if (job) await t.mutation(api.jobs.retry, { jobId: job._id });
    },
    // Staged documents of ended attempts are purged by scheduled functions.
    purge: () => t.finishInProgressScheduledFunctions(),
    // Every lease runs out: the workers died.
    expire: async () => {
      held.length = 0;
      vi.advanceTimersByTime(LEASE + 1);
      await t.finishAllScheduledFunctions(vi.runAllTimers);
    },
    // Time passes: leases that ran out meanwhile are reaped.
    wait: async () => {
      vi.advanceTimersByTime(60_000);
      await t.finishInProgressScheduledFunctions();
    },
  };
  return { t, operations, allJobs };
}

test.each([1, 2, 3, 4, 5])("the counters equal a recount after a random sequence of operations (seed %i)", async (seed) => {
  const { t, operations, allJobs } = setup();
  const pick = random(seed);
  const names = Object.keys(operations);
  for (let step = 0; step < 200; step++) {
    // Enqueues and claims more often than the rest, so that every status is reached.
    const name = pick() < 0.3 ? (pick() < 0.5 ? "enqueue" : "claim") : names[Math.floor(pick() * names.length)];
    await operations[name](pick);
    if (step % 10 === 9) {
      const jobs = await allJobs();
      for (const job of jobs) seen.add(job.status);
      await expectCountersExact(t, jobs);
    }
  }
}, 60_000);

test("the sequences above reached every status but the CLI's own steps", () => {
  expect([...seen]).toEqual(expect.arrayContaining(["pending", "running", "analyzing", "completed", "failed", "canceled"]));
});
