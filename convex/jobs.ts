// The web UI's functions, for signed-in users only: a job belongs to the identity that queued it,
// and a user sees and acts on their own jobs only.
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { jobRequest, jobStatus } from "../queue/client";
import { mutation, query } from "./_generated/server";
import { maxUnfinishedJobsPerUser, requireUser } from "./access";
import { queue } from "./queue";

export const enqueue = mutation({
  args: jobRequest,
  handler: async (ctx, args) =>
    await queue.enqueue(ctx, { ...args, ...(await requireUser(ctx)), maxUnfinished: maxUnfinishedJobsPerUser() }),
});

export const get = query({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.get(ctx, jobId, await requireUser(ctx)),
});

export const list = query({
  args: { status: v.optional(jobStatus), repositoryId: v.optional(v.string()), paginationOpts: paginationOptsValidator },
  handler: async (ctx, args) => await queue.list(ctx, { ...args, ...(await requireUser(ctx)) }),
});

export const stats = query({
  args: {},
  handler: async (ctx) => await queue.stats(ctx, await requireUser(ctx)),
});

export const cancel = mutation({
  args: { jobId: v.string(), reason: v.optional(v.string()) },
  handler: async (ctx, { jobId, reason }) => await queue.cancel(ctx, jobId, { reason, ...(await requireUser(ctx)) }),
});

export const retry = mutation({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.retry(ctx, jobId, await requireUser(ctx)),
});

/** The live logs of one of the user's jobs: the last lines of its CLI's output. */
export const logs = query({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.logs(ctx, jobId, await requireUser(ctx)),
});
