// The queue component as the platform installed it, and its completion callback: the finished
// course's documents are copied into the platform's own docs table.
import { v } from "convex/values";
import { FondationQueue } from "../../../queue/client";
import { components, internal } from "./_generated/api";
import type { Id } from "./_generated/dataModel";
import { internalMutation } from "./_generated/server";

// Annotated: the onComplete reference makes the type refer to itself.
export const queue: FondationQueue = new FondationQueue(components.fondationQueue, { onComplete: internal.queue.copyDocs });

/** Runs once a job completed (scheduled by the component): the repository's course becomes this job's docs. */
export const copyDocs = internalMutation({
  args: { jobId: v.string(), context: v.object({ repositoryId: v.id("repositories") }) },
  handler: async (ctx, { jobId, context: { repositoryId } }) => {
    for (const old of await ctx.db.query("docs").withIndex("by_repository", (q) => q.eq("repositoryId", repositoryId)).collect()) {
      await ctx.db.delete(old._id);
    }
    const createdAt = Date.now();
    for (const doc of await queue.docs(ctx, jobId)) {
      // The component's kinds are the platform's union (worker:saveDocs takes no other).
      const { title, slug, chapterIndex, content, kind } = doc;
      await ctx.db.insert("docs", { jobId, repositoryId: repositoryId as Id<"repositories">, title, slug, chapterIndex, content, kind, createdAt });
    }
  },
});
