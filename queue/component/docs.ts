// The documents (course chapters) of a completed job, a page at a time in chapter order.
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { query } from "./_generated/server";
import { visibleJob } from "./jobs";
import { emptyPage, page, requirePageSize } from "./lib";

export const byJob = query({
  args: { jobId: v.string(), userId: v.optional(v.string()), paginationOpts: paginationOptsValidator },
  handler: async (ctx, { jobId, userId, paginationOpts }) => {
    const job = await visibleJob(ctx, jobId, userId);
    const leaseToken = job?.docsLeaseToken;
    if (job === null || leaseToken === undefined) {
      requirePageSize(paginationOpts);
      return emptyPage();
    }
    const docs = ctx.db
      .query("docs")
      .withIndex("by_job_lease_chapter", (q) => q.eq("jobId", job._id).eq("leaseToken", leaseToken));
    return await page(docs, paginationOpts, ({ leaseToken: _leaseToken, ...doc }) => doc);
  },
});
