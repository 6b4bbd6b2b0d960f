// What the platform's UI calls: a signed-in user turns one of their repositories into a course.
import { v } from "convex/values";
import { refuse } from "../../../queue/component/lib";
import type { Doc } from "./_generated/dataModel";
import { mutation, query, type QueryCtx } from "./_generated/server";
import { queue } from "./queue";

const MAX_UNFINISHED_JOBS_PER_USER = 3;

/** The signed-in user's row (GitHub sign-in: the identity's subject is the GitHub id). */
async function viewer(ctx: QueryCtx): Promise<Doc<"users">> {
  const identity = await ctx.auth.getUserIdentity();
  if (identity === null) refuse("unauthorized", "sign in first");
  const user = await ctx.db.query("users").withIndex("by_github_id", (q) => q.eq("githubId", identity.subject)).unique();
  if (user === null) refuse("unauthorized", "no platform account for this identity");
  return user;
}

export const generate = mutation({
  args: { repositoryId: v.id("repositories"), prompt: v.optional(v.string()) },
  handler: async (ctx, { repositoryId, prompt }) => {
    const user = await viewer(ctx);
    const repository = await ctx.db.get(repositoryId);
    if (repository === null || repository.userId !== user._id) refuse("not_found", "no such repository of yours");
    return await queue.enqueue(ctx, {
      repositoryUrl: `https://github.com/${repository.fullName}`,
      branch: repository.defaultBranch,
      prompt: prompt ?? `Turn ${repository.fullName} into a course`,
      userId: user._id,
      repositoryId,
      dedupKey: repositoryId, // one unfinished course per repository
      maxUnfinished: MAX_UNFINISHED_JOBS_PER_USER,
      context: { repositoryId },
    });
  },
});

export const job = query({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.get(ctx, jobId, { userId: (await viewer(ctx))._id }),
});

export const cancel = mutation({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.cancel(ctx, jobId, { userId: (await viewer(ctx))._id }),
});

/** The course of one of the user's repositories, from the platform's own docs table. */
export const course = query({
  args: { repositoryId: v.id("repositories") },
  handler: async (ctx, { repositoryId }) => {
    const user = await viewer(ctx);
    const repository = await ctx.db.get(repositoryId);
    if (repository === null || repository.userId !== user._id) return [];
    const docs = await ctx.db.query("docs").withIndex("by_repository", (q) => q.eq("repositoryId", repositoryId)).collect();
    return docs.sort((a, b) => a.chapterIndex - b.chapterIndex);
  },
});
