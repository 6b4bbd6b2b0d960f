// The repository page's data: the repository as the platform keeps it (lastAnalyzedAt is set by the
// queue's onStatusChange, so the UI's updateRepositoryMetadata call after a job is not needed).
import { v } from "convex/values";
import { query } from "./_generated/server";

export const getRepositoryWithMetadata = query({
  args: { repositoryId: v.id("repositories") },
  handler: async (ctx, { repositoryId }) => await ctx.db.get(repositoryId),
});
