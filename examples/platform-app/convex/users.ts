// The platform's users (GitHub sign-in), and its dashboard's counters from the queue.
import { v } from "convex/values";
import { mutation, query } from "./_generated/server";
import { queue } from "./queue";

export const createOrUpdateUser = mutation({
  args: { githubId: v.string(), username: v.string(), email: v.optional(v.string()), avatarUrl: v.optional(v.string()) },
  handler: async (ctx, { githubId, ...profile }) => {
    const existing = await ctx.db.query("users").withIndex("by_github_id", (q) => q.eq("githubId", githubId)).first();
    if (existing !== null) {
      await ctx.db.patch(existing._id, profile);
      return existing._id;
    }
    return await ctx.db.insert("users", { githubId, ...profile, createdAt: Date.now() });
  },
});

export const getUserByGithubId = query({
  args: { githubId: v.string() },
  handler: async (ctx, { githubId }) => await ctx.db.query("users").withIndex("by_github_id", (q) => q.eq("githubId", githubId)).first(),
});

export const getDashboardStats = query({
  args: { userId: v.id("users") },
  handler: async (ctx, { userId }) => {
    const repositories = await ctx.db.query("repositories").withIndex("by_user", (q) => q.eq("userId", userId)).take(1000);
    const { counts } = await queue.stats(ctx, { userId });
    return {
      totalRepositories: repositories.length,
      activeJobs: counts.running + counts.cloning + counts.analyzing + counts.gathering,
      pendingJobs: counts.pending,
      completedJobs: counts.completed,
      failedJobs: counts.failed,
    };
  },
});

/** The dashboard's activity feed: the user's latest job status changes, newest first. */
export const getActivity = query({
  args: { userId: v.id("users") },
  handler: async (ctx, { userId }) => await ctx.db.query("activity").withIndex("by_user", (q) => q.eq("userId", userId)).order("desc").take(50),
});
