// The operator's functions, over every job: internal, so only the deployment's admin key reaches
// them (`npx convex run operator:list`, or `Authorization: Convex <admin key>` over HTTP, which
// the `fondation-agent enqueue | jobs | job | cancel` commands send).
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { jobRequest, jobStatus } from "../queue/client";
import { internalMutation, internalQuery } from "./_generated/server";
import { queue } from "./queue";

export const enqueue = internalMutation({
  args: jobRequest,
  handler: async (ctx, args) => await queue.enqueue(ctx, args),
});

export const get = internalQuery({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.get(ctx, jobId),
});

// The newest `limit` jobs (the `fondation-agent jobs` command's table): one page.
export const list = internalQuery({
  args: { status: v.optional(jobStatus), limit: v.optional(v.number()) },
  handler: async (ctx, { status, limit }) =>
    (await queue.list(ctx, { status, paginationOpts: { numItems: limit ?? 50, cursor: null } })).page,
});

export const stats = internalQuery({
  args: {},
  handler: async (ctx) => await queue.stats(ctx),
});

export const cancel = internalMutation({
  args: { jobId: v.string(), reason: v.optional(v.string()) },
  handler: async (ctx, { jobId, reason }) => await queue.cancel(ctx, jobId, { reason }),
});

export const retry = internalMutation({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.retry(ctx, jobId),
});

export const docs = internalQuery({
  args: { jobId: v.string(), paginationOpts: paginationOptsValidator },
  handler: async (ctx, { jobId, paginationOpts }) => await queue.docs(ctx, jobId, { paginationOpts }),
});

export const logs = internalQuery({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.logs(ctx, jobId),
});

// Upgrading: the one-off the operator runs once the new functions are deployed (docs/operations.md, "Upgrading").
export const backfill = internalMutation({
  args: {},
  handler: async (ctx) => await queue.backfill(ctx),
});

export const backfillPending = internalQuery({
  args: {},
  handler: async (ctx) => await queue.backfillPending(ctx),
});
