// The platform's tables, as its app has them (trimmed to what the example uses). The queue's jobs
// are the component's: `docs.jobId` is the component's job id, a string.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
// The platform's union of doc kinds, which the component's docs take too (docKinds, the component's rules.json).
import { docKind } from "../../../queue/component/validators";

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
