// Producer/UI functions: enqueue, inspect, cancel and retry jobs. The host app calls them from its
// own functions (a component's functions are never reachable by clients). A call that names a
// `userId` acts for that user: it sees and acts on that user's jobs only, under the user rules;
// without one it is the operator's, over every job.
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import type { Doc, Id } from "./_generated/dataModel";
import { mutation, query, type MutationCtx, type QueryCtx } from "./_generated/server";
import {
  ALL_STATUSES,
  DEFAULT_MAX_ATTEMPTS,
  MAX_DEDUP_KEY_LENGTH,
  MAX_MAX_ATTEMPTS,
  MAX_PROMPT_LENGTH,
  MAX_REASON_LENGTH,
  SHARDS,
  UNFINISHED_STATUSES,
  isActive,
  page,
  publicJob,
  refuse,
  requireBranch,
  requireInteger,
  requireLength,
  requireMetadata,
  requireRepositoryUrl,
} from "./lib";
import { insertJob, patchJob, readCounters, shardScope, userScope } from "./status";
import { callbackArg, jobRequest, jobStatus } from "./validators";

/** The job, if it exists and (when acting for a user) is theirs; another user's job does not exist for them. */
export async function visibleJob(ctx: QueryCtx, jobId: string, userId: string | undefined): Promise<Doc<"jobs"> | null> {
  const id = ctx.db.normalizeId("jobs", jobId);
  const job = id === null ? null : await ctx.db.get(id);
  return job !== null && (userId === undefined || job.userId === userId) ? job : null;
}

async function requireJob(ctx: QueryCtx, jobId: string, userId: string | undefined): Promise<Doc<"jobs">> {
  if (ctx.db.normalizeId("jobs", jobId) === null) refuse("invalid_argument", `${JSON.stringify(jobId)} is not a job id`);
  const job = await visibleJob(ctx, jobId, userId);
  if (job === null) refuse("not_found", `job ${jobId} does not exist`);
  return job;
}

/** Unfinished jobs of one owner, counted up to `atMost` (index reads stay bounded). */
async function unfinishedCount(ctx: QueryCtx, userId: string | undefined, atMost: number): Promise<number> {
  let count = 0;
  for (const status of UNFINISHED_STATUSES) {
    const page = await ctx.db
      .query("jobs")
      .withIndex("by_userId_status_createdAt", (q) => q.eq("userId", userId).eq("status", status))
      .take(atMost - count);
    count += page.length;
    if (count >= atMost) break;
  }
  return count;
}

async function unfinishedWithDedupKey(ctx: MutationCtx, userId: string | undefined, dedupKey: string): Promise<Id<"jobs"> | null> {
  for (const status of UNFINISHED_STATUSES) {
    const job = await ctx.db
      .query("jobs")
      .withIndex("by_userId_dedupKey_status", (q) => q.eq("userId", userId).eq("dedupKey", dedupKey).eq("status", status))
      .first();
    if (job !== null) return job._id;
  }
  return null;
}

export const enqueue = mutation({
  args: {
    ...jobRequest,
    userId: v.optional(v.string()),
    repositoryId: v.optional(v.string()),
    // At most this many unfinished jobs for `userId` (the host app's per-user limit).
    maxUnfinished: v.optional(v.number()),
    metadata: v.optional(v.any()),
    onComplete: v.optional(callbackArg),
    onStatusChange: v.optional(callbackArg),
  },
  handler: async (ctx, { maxUnfinished, ...args }) => {
    requireRepositoryUrl(args.repositoryUrl);
    if (args.branch !== undefined) requireBranch(args.branch);
    requireLength("prompt", args.prompt, MAX_PROMPT_LENGTH);
    const maxAttempts = args.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    requireInteger("maxAttempts", maxAttempts, 1, MAX_MAX_ATTEMPTS);
    if (args.metadata !== undefined) requireMetadata(args.metadata);
    if (args.dedupKey !== undefined) {
      requireLength("dedupKey", args.dedupKey, MAX_DEDUP_KEY_LENGTH);
      // Scoped to the owner: another user's key neither matches nor reveals their job.
      const existing = await unfinishedWithDedupKey(ctx, args.userId, args.dedupKey);
      if (existing !== null) return existing;
    }
    if (maxUnfinished !== undefined && (await unfinishedCount(ctx, args.userId, maxUnfinished)) >= maxUnfinished) {
      refuse("conflict", `at most ${maxUnfinished} unfinished jobs per user; wait for one to finish or cancel one`);
    }
    const now = Date.now();
    return await insertJob(ctx, {
      ...args,
      maxAttempts,
      status: "pending",
      progress: "Queued",
      attempts: 0,
      availableAt: now,
      createdAt: now,
      updatedAt: now,
    });
  },
});

export const get = query({
  args: { jobId: v.string(), userId: v.optional(v.string()) },
  handler: async (ctx, { jobId, userId }) => {
    const job = await visibleJob(ctx, jobId, userId);
    return job === null ? null : publicJob(job);
  },
});

export const list = query({
  args: {
    status: v.optional(jobStatus),
    repositoryId: v.optional(v.string()),
    userId: v.optional(v.string()),
    paginationOpts: paginationOptsValidator,
  },
  handler: async (ctx, { paginationOpts, ...filters }) => {
    // The filters given, in the order of the schema's by_<filters>_createdAt indexes: one index per
    // combination, so every list is an index range, newest first.
    const given = (["userId", "repositoryId", "status"] as const).filter((name) => filters[name] !== undefined);
    const index = ["by", ...given, "createdAt"].join("_") as "by_createdAt";
    const range = (q: any) => given.reduce((q, name) => q.eq(name, filters[name]), q);
    return await page(ctx.db.query("jobs").withIndex(index, range).order("desc"), paginationOpts, publicJob);
  },
});

export const stats = query({
  args: { userId: v.optional(v.string()) },
  handler: async (ctx, { userId }) => {
    // The counters (status.ts), never the jobs: a handful of small documents whatever the queue holds.
    const scopes = userId === undefined ? Array.from({ length: SHARDS }, (_, shard) => shardScope(shard)) : [userScope(userId)];
    const counts: Record<string, number> = Object.fromEntries(ALL_STATUSES.map((status) => [status, 0]));
    for (const scope of scopes) {
      for (const [status, count] of Object.entries(await readCounters(ctx, scope))) counts[status] += count;
    }
    // `capped` is always empty (the counts are exact): kept for the apps written when counts stopped at 1,000.
    return { counts, capped: [] as string[] };
  },
});

export const cancel = mutation({
  args: { jobId: v.string(), userId: v.optional(v.string()), reason: v.optional(v.string()) },
  handler: async (ctx, { jobId, userId, reason }) => {
    if (reason !== undefined) requireLength("reason", reason, MAX_REASON_LENGTH);
    const job = await requireJob(ctx, jobId, userId);
    const now = Date.now();
    const cancelReason = reason ?? job.cancelReason; // a second cancel without one keeps the first's
    if (job.status === "pending") {
      await patchJob(ctx, job, { status: "canceled", cancelReason, progress: "Canceled", updatedAt: now, finishedAt: now });
      return { status: "canceled" as const };
    }
    if (isActive(job.status)) {
      // The worker holding the lease sees this on its next heartbeat and stops the job.
      await ctx.db.patch(job._id, { cancelRequested: true, cancelReason, updatedAt: now });
      return { status: "cancel_requested" as const };
    }
    if (job.status === "canceled") return { status: "canceled" as const };
    refuse("conflict", `job ${jobId} is already ${job.status}`);
  },
});

export const retry = mutation({
  args: { jobId: v.string(), userId: v.optional(v.string()) },
  handler: async (ctx, { jobId, userId }) => {
    const job = await requireJob(ctx, jobId, userId);
    if (userId === undefined) {
      if (job.status !== "failed" && job.status !== "canceled") {
        refuse("conflict", `only failed or canceled jobs can be retried; job ${jobId} is ${job.status}`);
      }
    } else if (job.status !== "failed" || job.failureRetryable !== true) {
      // A user may not reset the attempts of a job that cannot succeed (or that they canceled).
      refuse("conflict", `only jobs that failed for a reason a retry may cure can be retried; job ${jobId} is ${job.status}`);
    }
    const now = Date.now();
    await patchJob(ctx, job, {
      status: "pending",
      progress: "Queued (retry)",
      attempts: 0,
      leaseExpiries: 0,
      availableAt: now,
      error: undefined,
      errorKind: undefined,
      failureRetryable: undefined,
      cancelRequested: undefined,
      cancelReason: undefined,
      finishedAt: undefined,
      updatedAt: now,
    });
    return { status: "pending" as const };
  },
});
