// A job's status changes here only, so that every change does the same: the canceled job shows the
// cancel's reason as its error, and the host app's callbacks run, each in its own transaction
// (scheduled, after this one commits: a slow or failing callback never undoes the queue's change).
import type { FunctionHandle, WithoutSystemFields } from "convex/server";
import { v } from "convex/values";
import { internal } from "./_generated/api";
import type { Doc } from "./_generated/dataModel";
import { internalMutation, type MutationCtx } from "./_generated/server";
import { jobStatus } from "./validators";

export type JobPatch = Partial<WithoutSystemFields<Doc<"jobs">>>;

/** Patches the job; when `patch.status` differs from its status, that is a status change. */
export async function patchJob(ctx: MutationCtx, job: Doc<"jobs">, patch: JobPatch): Promise<void> {
  const reason = patch.cancelReason ?? job.cancelReason;
  const change = patch.status === "canceled" && reason !== undefined ? { ...patch, error: reason } : patch;
  await ctx.db.patch(job._id, change);
  if (change.status === undefined || change.status === job.status) return;
  const after = { ...job, ...change };
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
