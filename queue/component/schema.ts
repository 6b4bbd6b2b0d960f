import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";
import { callbackArg, docKind, jobStatus, logLine, usage } from "./validators";

export default defineSchema({
  jobs: defineTable({
    // Fields of the existing UI's schema. userId is the owner the host app names (the repository's
    // app: the caller's identity); jobs queued by the operator have none.
    userId: v.optional(v.string()),
    repositoryId: v.optional(v.string()),
    repositoryUrl: v.string(),
    branch: v.optional(v.string()),
    prompt: v.string(),
    status: jobStatus,
    progress: v.optional(v.string()),
    currentStep: v.optional(v.number()),
    totalSteps: v.optional(v.number()),
    result: v.optional(v.any()),
    error: v.optional(v.string()),
    createdAt: v.number(),
    updatedAt: v.number(),
    // Queue fields.
    attempts: v.number(),
    maxAttempts: v.number(),
    availableAt: v.number(),
    leaseOwner: v.optional(v.string()),
    leaseToken: v.optional(v.string()),
    leaseExpiresAt: v.optional(v.number()),
    errorKind: v.optional(v.string()),
    // Whether the last failure was one a retry may cure (worker:fail's `retryable`): users may
    // retry only those.
    failureRetryable: v.optional(v.boolean()),
    cancelRequested: v.optional(v.boolean()),
    dedupKey: v.optional(v.string()),
    // Set once a job is completed, failed or canceled.
    finishedAt: v.optional(v.number()),
    // Claims so far (attempts minus releases would lose count): makes every lease token new.
    claims: v.optional(v.number()),
    // How many attempts ended because their lease ran out (the worker died or stalled).
    leaseExpiries: v.optional(v.number()),
    // How many attempts were released for host problems (worker:release's hostFailureKind).
    hostReleases: v.optional(v.number()),
    // The lease token of the attempt whose docs are the job's docs (set by worker:complete).
    docsLeaseToken: v.optional(v.string()),
    // The documents the attempt holding `leaseToken` has staged so far, counted as worker:saveDocs
    // writes them, so that no call reads staged content to count it (Convex's 16 MiB read limit).
    // Another lease token: that attempt's count, not this one's (this one has staged nothing).
    staged: v.optional(v.object({ leaseToken: v.string(), docs: v.number(), bytes: v.number() })),
    // The host app's mutations (function handles, and their context): run once the job completes,
    // and at every change of its status.
    onComplete: v.optional(callbackArg),
    onStatusChange: v.optional(callbackArg),
    // The host app's own data about the job (its ids, its counters), set at enqueue, never read here.
    metadata: v.optional(v.any()),
    // The reason given with a cancel: the canceled job's error.
    cancelReason: v.optional(v.string()),
    // The shard (0 to SHARDS - 1) it was queued in, and counted in (status.ts). Jobs queued before
    // shards existed have none until migrations:backfill gives them one.
    shard: v.optional(v.number()),
    // Claude's usage, summed over the job's attempts (usage.ts), and the current claim's own.
    usage: v.optional(usage),
    attemptUsage: v.optional(v.object({ ...usage.fields, claim: v.number() })),
  })
    .index("by_shard_status_availableAt", ["shard", "status", "availableAt"])
    .index("by_status_createdAt", ["status", "createdAt"])
    .index("by_createdAt", ["createdAt"])
    .index("by_userId_createdAt", ["userId", "createdAt"])
    .index("by_userId_status_createdAt", ["userId", "status", "createdAt"])
    // jobs:list's filters (owner, repository, status: each optional) each have an index, named
    // by_<the filters given, in this order>_createdAt, so that no list scans.
    .index("by_repositoryId_createdAt", ["repositoryId", "createdAt"])
    .index("by_repositoryId_status_createdAt", ["repositoryId", "status", "createdAt"])
    .index("by_userId_repositoryId_createdAt", ["userId", "repositoryId", "createdAt"])
    .index("by_userId_repositoryId_status_createdAt", ["userId", "repositoryId", "status", "createdAt"])
    .index("by_userId_dedupKey_status", ["userId", "dedupKey", "status"]),
  docs: defineTable({
    jobId: v.id("jobs"),
    title: v.string(),
    slug: v.string(),
    kind: docKind,
    chapterIndex: v.number(),
    content: v.string(),
    // The claim (lease token) that wrote it: docs are staged per attempt, and the job shows only
    // those of the attempt that completed it (jobs.docsLeaseToken).
    leaseToken: v.string(),
  })
    .index("by_job_lease_chapter", ["jobId", "leaseToken", "chapterIndex"])
    .index("by_job_lease_slug", ["jobId", "leaseToken", "slug"]),
  // The tail of a job's CLI output (its live logs): one document per job, trimmed by every
  // worker:heartbeat that adds to it to the last maxLogLines lines and maxLogBytes bytes.
  logs: defineTable({
    jobId: v.id("jobs"),
    lines: v.array(logLine),
    bytes: v.number(),
  }).index("by_job", ["jobId"]),
  // How many jobs are in each status, per scope: "shard:<n>" (every job, by shard) and
  // "user:<userId>" (an owner's jobs). Kept by status.ts as jobs are inserted and change status.
  counters: defineTable({
    scope: v.string(),
    status: jobStatus,
    count: v.number(),
  }).index("by_scope_status", ["scope", "status"]),
});
