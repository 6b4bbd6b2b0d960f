// The platform's tables, as its app has them (trimmed to what the example uses). The queue's jobs
// are the component's: `docs.jobId` is the component's job id, a string.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
// The platform's union of doc kinds, which the component's docs take too (rules.json's docKinds).
import { docKind, jobStatus } from "../../../queue/client";

/** A repository as the platform's GitHub sync records it (repositories:create). */
export const repositoryFields = {
  userId: v.id("users"),
  githubRepoId: v.string(),
  name: v.string(),
  fullName: v.string(),
  description: v.optional(v.string()),
  defaultBranch: v.string(),
};

export default defineSchema({
  users: defineTable({
    githubId: v.string(),
    username: v.string(),
    email: v.optional(v.string()),
    avatarUrl: v.optional(v.string()),
    createdAt: v.number(),
  }).index("by_github_id", ["githubId"]),
  repositories: defineTable({
    ...repositoryFields,
    // Kept by the queue's onStatusChange: when a course of it last completed.
    lastAnalyzedAt: v.optional(v.number()),
  })
    .index("by_user", ["userId"])
    .index("by_full_name", ["fullName"]),
  // The platform's activity feed: every status change of its users' jobs (the queue's onStatusChange).
  activity: defineTable({
    userId: v.id("users"),
    jobId: v.string(),
    oldStatus: jobStatus,
    newStatus: jobStatus,
    error: v.optional(v.string()),
    attempt: v.number(),
    at: v.number(),
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
    .index("by_job_slug", ["jobId", "slug"])
    .index("by_repository", ["repositoryId"]),
});
