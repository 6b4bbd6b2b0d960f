// Producer/UI functions: enqueue, inspect, cancel and retry jobs.
import { v } from "convex/values";
import type { Doc, Id } from "./_generated/dataModel";
import { mutation, query, type MutationCtx, type QueryCtx } from "./_generated/server";
import {
  ALL_STATUSES,
  DEFAULT_MAX_ATTEMPTS,
  MAX_MAX_ATTEMPTS,
  MAX_PROMPT_LENGTH,
  UNFINISHED_STATUSES,
  isActive,
  publicJob,
  refuse,
  requireBranch,
  requireInteger,
  requireLength,
  requireRepositoryUrl,
} from "./lib";

const status = v.union(...ALL_STATUSES.map((s) => v.literal(s)));
const MAX_LIST_LIMIT = 200;
// jobs:stats counts through the status index; past this many it says "at least".
const STATS_COUNT_CAP = 1_000;

export async function jobById(ctx: QueryCtx, jobId: string): Promise<Doc<"jobs">> {
  const id = ctx.db.normalizeId("jobs", jobId);
  if (id === null) refuse("invalid_argument", `${JSON.stringify(jobId)} is not a job id`);
  const job = await ctx.db.get(id);
  if (job === null) refuse("not_found", `job ${jobId} does not exist`);
  return job;
}

async function unfinishedWithDedupKey(ctx: MutationCtx, dedupKey: string): Promise<Id<"jobs"> | null> {
  for (const s of UNFINISHED_STATUSES) {
    const job = await ctx.db
      .query("jobs")
      .withIndex("by_dedupKey_status", (q) => q.eq("dedupKey", dedupKey).eq("status", s))
      .first();
    if (job !== null) return job._id;
  }
  return null;
}

export const enqueue = mutation({
  args: {
    repositoryUrl: v.string(),
    branch: v.optional(v.string()),
    prompt: v.string(),
    dedupKey: v.optional(v.string()),
    maxAttempts: v.optional(v.number()),
    userId: v.optional(v.string()),
    repositoryId: v.optional(v.string()),
  },
  handler: async (ctx, args) => {
    requireRepositoryUrl(args.repositoryUrl);
    if (args.branch !== undefined) requireBranch(args.branch);
    requireLength("prompt", args.prompt, MAX_PROMPT_LENGTH);
    const maxAttempts = args.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    requireInteger("maxAttempts", maxAttempts, 1, MAX_MAX_ATTEMPTS);
    if (args.dedupKey !== undefined) {
      requireLength("dedupKey", args.dedupKey, 200);
      const existing = await unfinishedWithDedupKey(ctx, args.dedupKey);
      if (existing !== null) return existing;
    }
    const now = Date.now();
    return await ctx.db.insert("jobs", {
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
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => {
    const id = ctx.db.normalizeId("jobs", jobId);
    const job = id === null ? null : await ctx.db.get(id);
    return job === null ? null : publicJob(job);
  },
});

export const list = query({
  args: { status: v.optional(status), limit: v.optional(v.number()) },
  handler: async (ctx, { status, limit }) => {
    const take = limit ?? 50;
    requireInteger("limit", take, 1, MAX_LIST_LIMIT);
    const jobs =
      status === undefined
        ? await ctx.db.query("jobs").withIndex("by_createdAt").order("desc").take(take)
        : await ctx.db
            .query("jobs")
            .withIndex("by_status_createdAt", (q) => q.eq("status", status))
            .order("desc")
            .take(take);
    return jobs.map(publicJob);
  },
});

export const stats = query({
  args: {},
  handler: async (ctx) => {
    const counts: Record<string, number> = {};
    const capped: string[] = [];
    for (const s of ALL_STATUSES) {
      const page = await ctx.db
        .query("jobs")
        .withIndex("by_status_createdAt", (q) => q.eq("status", s))
        .take(STATS_COUNT_CAP + 1);
      counts[s] = Math.min(page.length, STATS_COUNT_CAP);
      if (page.length > STATS_COUNT_CAP) capped.push(s);
    }
    // `capped` lists the statuses whose count is "at least" rather than exact.
    return { counts, capped };
  },
});

export const cancel = mutation({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => {
    const job = await jobById(ctx, jobId);
    const now = Date.now();
    if (job.status === "pending") {
      await ctx.db.patch(job._id, { status: "canceled", progress: "Canceled", updatedAt: now, finishedAt: now });
      return { status: "canceled" };
    }
    if (isActive(job.status)) {
      // The worker holding the lease sees this on its next heartbeat and stops the job.
      await ctx.db.patch(job._id, { cancelRequested: true, updatedAt: now });
      return { status: "cancel_requested" };
    }
    if (job.status === "canceled") return { status: "canceled" };
    refuse("conflict", `job ${jobId} is already ${job.status}`);
  },
});

export const retry = mutation({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => {
    const job = await jobById(ctx, jobId);
    if (job.status !== "failed" && job.status !== "canceled") {
      refuse("conflict", `only failed or canceled jobs can be retried; job ${jobId} is ${job.status}`);
    }
    const now = Date.now();
    await ctx.db.patch(job._id, {
      status: "pending",
      progress: "Queued (retry)",
      attempts: 0,
      leaseExpiries: 0,
      availableAt: now,
      error: undefined,
      errorKind: undefined,
      cancelRequested: undefined,
      finishedAt: undefined,
      updatedAt: now,
    });
    return { status: "pending" };
  },
});
