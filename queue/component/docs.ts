// The documents (course chapters) of a completed job.
import { v } from "convex/values";
import { query } from "./_generated/server";
import { visibleJob } from "./jobs";
import { MAX_DOCS_PER_JOB } from "./lib";

export const byJob = query({
  args: { jobId: v.string(), userId: v.optional(v.string()) },
  handler: async (ctx, { jobId, userId }) => {
    const job = await visibleJob(ctx, jobId, userId);
    const leaseToken = job?.docsLeaseToken;
    if (!job || leaseToken === undefined) return [];
    const docs = await ctx.db
      .query("docs")
      .withIndex("by_job_lease_chapter", (q) => q.eq("jobId", job._id).eq("leaseToken", leaseToken))
      .take(MAX_DOCS_PER_JOB);
    return docs.map(({ leaseToken: _leaseToken, ...rest }) => rest);
  },
});
