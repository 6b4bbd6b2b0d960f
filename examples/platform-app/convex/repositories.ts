// The platform's repositories (its GitHub sync fills this table; not part of the example).
import { v } from "convex/values";
import { internalMutation, mutation, query } from "./_generated/server";
import { analyze, requireRepository } from "./access";
import { repositoryFields } from "./schema";

/** What the platform's GitHub sync (fetchGitHubRepositories) calls for a repository it has not seen. */
export const create = internalMutation({
  args: repositoryFields,
  handler: async (ctx, args) => await ctx.db.insert("repositories", args),
});

export const listUserRepositories = query({
  args: { userId: v.id("users") },
  handler: async (ctx, { userId }) => await ctx.db.query("repositories").withIndex("by_user", (q) => q.eq("userId", userId)).take(1000),
});

export const getByFullName = query({
  args: { fullName: v.string() },
  handler: async (ctx, { fullName }) => await ctx.db.query("repositories").withIndex("by_full_name", (q) => q.eq("fullName", fullName)).take(100),
});

/** "Regenerate": a new course of the repository, for its owner. */
export const triggerAnalyze = mutation({
  args: { repositoryId: v.id("repositories") },
  handler: async (ctx, { repositoryId }) => {
    const repository = await requireRepository(ctx, repositoryId);
    const jobId = await analyze(ctx, repository, "Regenerate course documentation");
    return { jobId, repository: { fullName: repository.fullName, defaultBranch: repository.defaultBranch } };
  },
});
