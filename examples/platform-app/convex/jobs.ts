// The UI's job functions, over the queue component: each is one client call (docs/platform.md).
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import { mutation, query } from "./_generated/server";
import { analyze, requireOwnRepository, requireRepository } from "./access";
import { queue } from "./queue";

export const create = mutation({
  args: { userId: v.id("users"), repositoryId: v.string(), prompt: v.string() },
  handler: async (ctx, { userId, repositoryId, prompt }) => ({
    jobId: await analyze(ctx, await requireOwnRepository(ctx, repositoryId, userId), prompt),
  }),
});

/** The repo card's "Analyze": `repoUrl` is not trusted, the repository's own URL is queued. */
export const startAnalysis = mutation({
  args: { repositoryId: v.string(), userId: v.id("users"), repoUrl: v.string() },
  handler: async (ctx, { repositoryId, userId }) => ({
    jobId: await analyze(ctx, await requireOwnRepository(ctx, repositoryId, userId)),
  }),
});

/** The user's jobs, newest first, a page at a time (the UI used to load them all). */
export const listUserJobs = query({
  args: { userId: v.id("users"), paginationOpts: paginationOptsValidator },
  handler: async (ctx, { userId, paginationOpts }) => await queue.list(ctx, { userId, paginationOpts }),
});

// The job page's reads. As in the platform, a job id alone reads the job (no auth): see docs/platform.md.
export const getJob = query({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => await queue.get(ctx, jobId),
});

export const getById = query({
  args: { id: v.string() },
  handler: async (ctx, { id }) => await queue.get(ctx, id),
});

/** The repo card's latest job: one index read, however many jobs the user has. */
export const getJobByRepository = query({
  args: { repositoryId: v.string() },
  handler: async (ctx, { repositoryId }) => {
    await requireRepository(ctx, repositoryId);
    const { page } = await queue.list(ctx, { repositoryId, paginationOpts: { numItems: 1, cursor: null } });
    return page[0] ?? null;
  },
});

export const getLatestCompletedByRepository = query({
  args: { repositoryId: v.string() },
  handler: async (ctx, { repositoryId }) => {
    await requireRepository(ctx, repositoryId);
    const { page } = await queue.list(ctx, { repositoryId, status: "completed", paginationOpts: { numItems: 1, cursor: null } });
    return page[0] ?? null;
  },
});

/** The job page's "Live Logs": the tail of the CLI's output, in the platform's shape ({seq, level, msg}). */
export const getLogs = query({
  args: { jobId: v.string() },
  handler: async (ctx, { jobId }) => (await queue.logs(ctx, jobId)).map(({ level, text }, seq) => ({ seq, level, msg: text })),
});

/** The user's cancel, with the reason they gave (shown as the canceled job's error). */
export const cancelJob = mutation({
  args: { jobId: v.string(), userId: v.id("users"), reason: v.optional(v.string()) },
  handler: async (ctx, { jobId, userId, reason }) => ({ jobId, ...(await queue.cancel(ctx, jobId, { userId, reason })) }),
});
