// A job's status changes here only, so that every change does the same: the job counters follow
// (jobs:stats and worker:queueDepth read them, never the jobs), the canceled job shows the cancel's
// reason as its error, and the host app's callbacks run, each in its own transaction (scheduled,
// after this one commits: a slow or failing callback never undoes the queue's change).
import type { FunctionHandle, WithoutSystemFields } from "convex/server";
import { v } from "convex/values";
import { internal } from "./_generated/api";
import type { Doc, Id } from "./_generated/dataModel";
import { internalMutation, type MutationCtx, type QueryCtx } from "./_generated/server";
import { SHARDS, type Status } from "./lib";
import { jobStatus } from "./validators";

export type JobPatch = Partial<WithoutSystemFields<Doc<"jobs">>>;
export type NewJob = Omit<WithoutSystemFields<Doc<"jobs">>, "shard">;

// ---------------------------------------------------------------------------- counters
// One counter per (shard, status) — claims on different shards write different counters, so they
// do not conflict — and one per (owner, status) for the owners' stats. A job without a shard was
// queued before counters existed and is not counted yet: migrations:backfill counts it as it gives
// it a shard, in the same transaction, so the counters are exact with or without traffic meanwhile.

export function shardScope(shard: number): string {
  return `shard:${shard}`;
}

export function userScope(userId: string): string {
  return `user:${userId}`;
}

function scopesOf(job: { shard?: number; userId?: string }): string[] {
  if (job.shard === undefined) return [];
  return job.userId === undefined ? [shardScope(job.shard)] : [shardScope(job.shard), userScope(job.userId)];
}

async function bump(ctx: MutationCtx, scope: string, status: Status, delta: number): Promise<void> {
  const counter = await ctx.db
    .query("counters")
    .withIndex("by_scope_status", (q) => q.eq("scope", scope).eq("status", status))
    .unique();
  if (counter === null) await ctx.db.insert("counters", { scope, status, count: delta });
  else await ctx.db.patch(counter._id, { count: counter.count + delta });
}

/** Counts a job (of a shard) in its status: `delta` 1 as it comes, -1 as it leaves. */
export async function countJob(ctx: MutationCtx, job: { shard?: number; userId?: string; status: Status }, delta: number) {
  for (const scope of scopesOf(job)) await bump(ctx, scope, job.status, delta);
}

/** The counts of one scope, by status (statuses never counted are absent). */
export async function readCounters(ctx: QueryCtx, scope: string): Promise<Partial<Record<Status, number>>> {
  const counters = await ctx.db
    .query("counters")
    .withIndex("by_scope_status", (q) => q.eq("scope", scope))
    .collect();
  return Object.fromEntries(counters.map(({ status, count }) => [status, count]));
}

/** A shard for a new job: jobs spread evenly, so that concurrent claims start at different ones. */
export function newShard(): number {
  return Math.floor(Math.random() * SHARDS);
}

/** Inserts a job in a random shard, counted. */
export async function insertJob(ctx: MutationCtx, job: NewJob): Promise<Id<"jobs">> {
  const shard = newShard();
  const jobId = await ctx.db.insert("jobs", { ...job, shard });
  await countJob(ctx, { ...job, shard }, 1);
  return jobId;
}

/** Patches the job; when `patch.status` differs from its status, that is a status change. */
export async function patchJob(ctx: MutationCtx, job: Doc<"jobs">, patch: JobPatch): Promise<void> {
  const reason = patch.cancelReason ?? job.cancelReason;
  const change = patch.status === "canceled" && reason !== undefined ? { ...patch, error: reason } : patch;
  await ctx.db.patch(job._id, change);
  if (change.status === undefined || change.status === job.status) return;
  const after = { ...job, ...change };
  await countJob(ctx, job, -1);
  await countJob(ctx, after, 1);
  if (job.onStatusChange !== undefined) {
    await ctx.scheduler.runAfter(0, internal.status.runOnStatusChange, {
      jobId: job._id,
      oldStatus: job.status,
      newStatus: change.status,
      error: after.error,
      attempt: after.attempts,
    });
  }
  if (change.status === "completed" && job.onComplete !== undefined) {
    await ctx.scheduler.runAfter(0, internal.status.runOnComplete, { jobId: job._id });
  }
}

/** Runs the host app's onComplete mutation for a completed job: the app's copy of the docs may be large. */
export const runOnComplete = internalMutation({
  args: { jobId: v.id("jobs") },
  handler: async (ctx, { jobId }) => {
    const job = await ctx.db.get(jobId);
    if (job?.status !== "completed" || job.onComplete === undefined) return;
    const { handle, context } = job.onComplete;
    await ctx.runMutation(handle as FunctionHandle<"mutation">, { jobId, context });
  },
});

/** Runs the host app's onStatusChange mutation with one change, as it was when it happened. */
export const runOnStatusChange = internalMutation({
  args: {
    jobId: v.id("jobs"),
    oldStatus: jobStatus,
    newStatus: jobStatus,
    error: v.optional(v.string()),
    attempt: v.number(),
  },
  handler: async (ctx, { jobId, ...change }) => {
    const job = await ctx.db.get(jobId);
    if (job?.onStatusChange === undefined) return;
    const { handle, context } = job.onStatusChange;
    await ctx.runMutation(handle as FunctionHandle<"mutation">, { jobId, context, ...change });
  },
});
