// A signed-in user's documents: those of their own completed jobs.
import { v } from "convex/values";
import { query } from "./_generated/server";
import { requireUser } from "./access";
import { queue } from "./queue";

export const byJob = query({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.docs(ctx, jobId, await requireUser(ctx)),
});
