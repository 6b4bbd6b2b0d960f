// The queue component as the platform installed it, and its two callbacks: at every status change
// an entry in the user's activity feed (and, on completion, the repository's lastAnalyzedAt); once a
// job completes, its earlier documents are deleted and the new ones copied into the platform's docs
// table, a page of at most 4 MiB per transaction.
import { v } from "convex/values";
import { FondationQueue, jobStatus } from "../../../queue/client";
import { components, internal } from "./_generated/api";
import type { Id } from "./_generated/dataModel";
import { internalMutation } from "./_generated/server";

// Annotated: the callbacks' references make the type refer to itself.
export const queue: FondationQueue = new FondationQueue(components.fondationQueue, {
  onComplete: internal.queue.copyDocs,
  onStatusChange: internal.queue.statusChanged,
});

const repositoryContext = v.object({ repositoryId: v.id("repositories") });

export const statusChanged = internalMutation({
  args: {
    jobId: v.string(),
    context: repositoryContext,
    oldStatus: jobStatus,
    newStatus: jobStatus,
    error: v.optional(v.string()),
    attempt: v.number(),
  },
  handler: async (ctx, { jobId, context: { repositoryId }, ...change }): Promise<void> => {
    const repository = await ctx.db.get(repositoryId);
    if (repository === null) return; // deleted since
    await ctx.db.insert("activity", { userId: repository.userId, jobId, ...change, at: Date.now() });
    if (change.newStatus === "completed") await ctx.db.patch(repositoryId, { lastAnalyzedAt: Date.now() });
  },
});

// What one transaction of the copy reads, at most: Convex refuses more than 16 MiB.
const PAGE_BYTES = 4 << 20;

export const copyDocs = internalMutation({
  args: { jobId: v.string(), context: repositoryContext },
  handler: async (ctx, { jobId, context: { repositoryId } }): Promise<void> => {
    await ctx.scheduler.runAfter(0, internal.queue.deleteOldDocsPage, { jobId, repositoryId });
  },
});

/** The repository's earlier documents, a page per transaction; then the copy of the new ones starts. */
export const deleteOldDocsPage = internalMutation({
  args: { jobId: v.string(), repositoryId: v.id("repositories") },
  handler: async (ctx, { jobId, repositoryId }): Promise<void> => {
    const old = await ctx.db
      .query("docs")
      .withIndex("by_repository", (q) => q.eq("repositoryId", repositoryId))
      .paginate({ numItems: 200, cursor: null, maximumBytesRead: PAGE_BYTES });
    for (const doc of old.page) await ctx.db.delete(doc._id);
    if (old.isDone) await ctx.scheduler.runAfter(0, internal.queue.copyDocsPage, { jobId, repositoryId, cursor: null });
    else await ctx.scheduler.runAfter(0, internal.queue.deleteOldDocsPage, { jobId, repositoryId });
  },
});

/** One page of the job's documents per transaction (a course can be larger than one may write). */
export const copyDocsPage = internalMutation({
  args: { jobId: v.string(), repositoryId: v.id("repositories"), cursor: v.union(v.string(), v.null()) },
  handler: async (ctx, { jobId, repositoryId, cursor }): Promise<void> => {
    const createdAt = Date.now();
    const result = await queue.docs(ctx, jobId, { paginationOpts: { numItems: 50, cursor, maximumBytesRead: PAGE_BYTES } });
    for (const { title, slug, chapterIndex, content, kind } of result.page) {
      await ctx.db.insert("docs", { jobId, repositoryId: repositoryId as Id<"repositories">, title, slug, chapterIndex, content, kind, createdAt });
    }
    if (!result.isDone) await ctx.scheduler.runAfter(0, internal.queue.copyDocsPage, { jobId, repositoryId, cursor: result.continueCursor });
  },
});
