// A signed-in user's documents: those of their own completed jobs, a page at a time.
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { query } from "./_generated/server";
import { requireUser } from "./access";
import { queue } from "./queue";

export const byJob = query({
  args: { jobId: v.string(), paginationOpts: paginationOptsValidator },
  handler: async (ctx, { jobId, paginationOpts }) => await queue.docs(ctx, jobId, { paginationOpts, ...(await requireUser(ctx)) }),
});
