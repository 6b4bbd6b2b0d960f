// The platform's tables, as its app has them (trimmed to what the example uses). The queue's jobs
// are the component's: `docs.jobId` is the component's job id, a string.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export const docKind = v.union(v.literal("chapter"), v.literal("tutorial"), v.literal("toc"), v.literal("yaml"));

export default defineSchema({
  users: defineTable({
    githubId: v.string(),
    username: v.string(),
    createdAt: v.number(),
  }).index("by_github_id", ["githubId"]),
  repositories: defineTable({
    userId: v.id("users"),
    githubRepoId: v.string(),
    name: v.string(),
    fullName: v.string(),
    defaultBranch: v.string(),
  }).index("by_user", ["userId"]),
  docs: defineTable({
    jobId: v.string(),
    repositoryId: v.id("repositories"),
    slug: v.string(),
    title: v.string(),
    chapterIndex: v.number(),
    kind: docKind,
    content: v.string(),
    createdAt: v.number(),
  })
    .index("by_job", ["jobId"])
    .index("by_repository", ["repositoryId"]),
});
