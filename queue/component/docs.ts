// The documents (course chapters) of a completed job, a page at a time in chapter order: a page
// holds numItems documents or about 8 MiB of them, whichever is less (isDone says when none is left).
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { query } from "./_generated/server";
import { visibleJob } from "./jobs";
import { emptyPage, page, requirePageSize } from "./lib";

// A page stops once it has read this much (Convex's own page cut, maximumBytesRead), whatever
// numItems asks: a page of 200 documents of 1 MB would pass the 16 MiB a query may read and return.
export const DOCS_PAGE_BYTES = 8 << 20;

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
    const maximumBytesRead = Math.min(paginationOpts.maximumBytesRead ?? DOCS_PAGE_BYTES, DOCS_PAGE_BYTES);
    return await page(docs, { ...paginationOpts, maximumBytesRead }, ({ leaseToken: _leaseToken, ...doc }) => doc);
  },
});
