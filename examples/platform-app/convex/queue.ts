// The queue component as the platform installed it, and its completion callback: the finished
// course's documents are copied into the platform's own docs table.
import { v } from "convex/values";
import { FondationQueue } from "../../../queue/client";
import { components, internal } from "./_generated/api";
import { internalMutation } from "./_generated/server";

// Annotated: the onComplete reference makes the type refer to itself.
export const queue: FondationQueue = new FondationQueue(components.fondationQueue, { onComplete: internal.queue.copyDocs });

/** Runs once a job completed (scheduled by the component): the repository's course becomes this job's docs. */
export const copyDocs = internalMutation({
  args: { jobId: v.string(), context: v.object({ repositoryId: v.id("repositories") }) },
  handler: async (ctx, { jobId, context: { repositoryId } }): Promise<void> => {
    for (const old of await ctx.db.query("docs").withIndex("by_repository", (q) => q.eq("repositoryId", repositoryId)).collect()) {
      await ctx.db.delete(old._id);
    }
    await ctx.scheduler.runAfter(0, internal.queue.copyDocsPage, { jobId, repositoryId, cursor: null });
  },
});

/** One page of the job's documents per transaction (a course can be larger than one may write). */
export const copyDocsPage = internalMutation({
  args: { jobId: v.string(), repositoryId: v.id("repositories"), cursor: v.union(v.string(), v.null()) },
  handler: async (ctx, { jobId, repositoryId, cursor }): Promise<void> => {
    const createdAt = Date.now();
    const result = await queue.docs(ctx, jobId, { paginationOpts: { numItems: 50, cursor } });
    for (const { title, slug, chapterIndex, content, kind } of result.page) {
      // The component's kinds are the platform's union (worker:saveDocs takes no other).
      await ctx.db.insert("docs", { jobId, repositoryId, title, slug, chapterIndex, content, kind, createdAt });
    }
    if (!result.isDone) await ctx.scheduler.runAfter(0, internal.queue.copyDocsPage, { jobId, repositoryId, cursor: result.continueCursor });
  },
});
