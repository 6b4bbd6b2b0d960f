// The course page: a completed job's chapters, a page at a time, and one chapter by its slug.
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { query } from "./_generated/server";
import { queue } from "./queue";

export const listByJobId = query({
  args: { jobId: v.string(), paginationOpts: paginationOptsValidator },
  handler: async (ctx, { jobId, paginationOpts }) => await queue.docs(ctx, jobId, { paginationOpts }),
});

/** From the platform's own copy (queue.ts's copyDocs), by its index. */
export const getBySlug = query({
  args: { jobId: v.string(), slug: v.string() },
  handler: async (ctx, { jobId, slug }) => await ctx.db.query("docs").withIndex("by_job_slug", (q) => q.eq("jobId", jobId).eq("slug", slug)).unique(),
});
