// The setup the worker queries' tests share (nextDue, queueDepth): a fresh component in convex-test
// under a fake clock, the worker token set, and a job to enqueue and claim. Outside component/, so
// it is no module of the component.
import { convexTest } from "convex-test";
import { afterEach, beforeEach, expect, vi } from "vitest";
import { api } from "./component/_generated/api";
import { ACTIVE_STATUSES, ALL_STATUSES, SHARDS } from "./component/lib";
import schema from "./component/schema";

const modules = import.meta.glob(["./component/**/*.*s", "!./component/**/*.test.ts"]);
export const TOKEN = "test-worker-token";
export const LEASE = 30_000;

/** Registers, for the calling test file, a fake clock and the worker token around every test. */
export function useFakeClockAndWorkerToken(): void {
  beforeEach(() => {
    vi.useFakeTimers();
    process.env.FONDATION_WORKER_TOKEN = TOKEN;
  });
  afterEach(() => vi.useRealTimers());
}

export function workerQueue() {
  const t = convexTest(schema, modules);
  const enqueue = () => t.mutation(api.jobs.enqueue, { repositoryUrl: "https://github.com/acme/widgets", prompt: "p" });
  const claim = () => t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: LEASE });
  /** Queues a job, claims it and fails it retryably: the job backs off until the returned time. */
  const backingOff = async (): Promise<number> => {
    await enqueue();
    const claimed = (await claim())!;
    const failed = await t.mutation(api.worker.fail, {
      workerToken: TOKEN,
      jobId: claimed.job._id,
      leaseToken: claimed.leaseToken,
      error: "boom",
      errorKind: "cli_failed",
      retryable: true,
    });
    if (!("availableAt" in failed) || failed.availableAt === undefined) throw new Error("expected a retry");
    return failed.availableAt;
  };
  return { t, enqueue, claim, backingOff };
}

/** What a function read (index ranges, as "table.index field=value …" of their equalities) and wrote (document ids). */
export type Accesses = { ranges: string[]; writes: string[] };

type Syscalls = { syscall: (op: string, json: string) => string; asyncSyscall: (op: string, json: string) => Promise<string> };
type IndexRange = { indexName: string; range: { type: string; fieldPath: string; value: unknown }[] };

/**
 * Runs `fn` (one convex-test call at a time) recording the index ranges it read and the documents it
 * wrote, from the syscalls Convex's runtime makes to convex-test: what decides whether two
 * transactions conflict (one wrote into what the other read).
 */
export async function recordAccesses<T>(fn: () => Promise<T>): Promise<{ value: T } & Accesses> {
  const global = globalThis as unknown as { Convex: Syscalls & Record<string, unknown> };
  const original = global.Convex;
  const accesses: Accesses = { ranges: [], writes: [] };
  global.Convex = {
    get syscall() {
      return (op: string, json: string) => {
        if (op === "1.0/queryStream") {
          const { indexName, range } = JSON.parse(json).query.source as IndexRange;
          const equalities = range.filter((r) => r.type === "Eq").map((r) => `${r.fieldPath}=${JSON.stringify(r.value)}`);
          accesses.ranges.push([indexName, ...equalities].join(" "));
        }
        return original.syscall(op, json);
      };
    },
    get asyncSyscall() {
      return async (op: string, json: string) => {
        const result = await original.asyncSyscall(op, json);
        if (op === "1.0/insert") accesses.writes.push(JSON.parse(result)._id);
        if (op === "1.0/shallowMerge" || op === "1.0/replace" || op === "1.0/remove") accesses.writes.push(JSON.parse(json).id);
        return result;
      };
    },
    get jsSyscall() {
      return original.jsSyscall;
    },
  };
  try {
    return { value: await fn(), ...accesses };
  } finally {
    global.Convex = original;
  }
}

/** jobs:stats (of all, and of alice and bob), worker:queueDepth and each shard's counters equal a recount of `jobs`. */
export async function expectCountersExact(t: ReturnType<typeof workerQueue>["t"], jobs: { status: string; userId?: string; shard?: number }[]) {
  const recount = (of: typeof jobs) => Object.fromEntries(ALL_STATUSES.map((s) => [s, of.filter((job) => job.status === s).length]));
  expect(await t.query(api.jobs.stats, {})).toEqual({ counts: recount(jobs), capped: [] });
  for (const userId of ["alice", "bob"]) {
    expect((await t.query(api.jobs.stats, { userId })).counts).toEqual(recount(jobs.filter((job) => job.userId === userId)));
  }
  const depth = await t.query(api.worker.queueDepth, { workerToken: TOKEN });
  expect(depth.pending).toBe(jobs.filter((job) => job.status === "pending").length);
  expect(depth.active).toBe(jobs.filter((job) => ACTIVE_STATUSES.includes(job.status as never)).length);
  // Every counted job has a shard, and the shards' counters add up per shard too.
  const counters = await t.run(async (ctx) => await ctx.db.query("counters").collect());
  for (let shard = 0; shard < SHARDS; shard++) {
    const inShard = recount(jobs.filter((job) => job.shard === shard));
    for (const status of ALL_STATUSES) {
      const counter = counters.find((c) => c.scope === `shard:${shard}` && c.status === status);
      expect(counter?.count ?? 0, `shard ${shard}, ${status}`).toBe(inShard[status]);
    }
  }
}
