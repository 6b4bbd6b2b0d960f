// Worker-facing queue functions. Every call carries the deployment's worker token, and every call
// after a claim carries the claim's lease token (a fencing token): a worker whose lease expired or
// was taken over is answered {ok:false, reason:"lease_lost"} and writes nothing.
import { v } from "convex/values";
import { internal } from "./_generated/api";
import type { Doc, Id } from "./_generated/dataModel";
import { internalMutation, mutation, query, type MutationCtx, type QueryCtx } from "./_generated/server";
import {
  ACTIVE_STATUSES,
  LEASE_EXPIRED,
  MAX_BYTES_PER_CALL,
  MAX_DOC_CONTENT_BYTES,
  MAX_DOCS_PER_CALL,
  MAX_DOCS_PER_JOB,
  MAX_ERROR_LENGTH,
  MAX_LEASE_MS,
  MAX_HOST_RELEASES,
  MAX_PROGRESS_LENGTH,
  MAX_STEP,
  MAX_TITLE_LENGTH,
  MIN_LEASE_MS,
  backoffMs,
  isActive,
  newLeaseToken,
  refuse,
  requireInteger,
  requireLength,
  requireWorker,
  takeBytes,
  SHARDS,
  SLUG_PATTERN,
  requireErrorKind,
} from "./lib";
import { appendLogs, requireLogs } from "./logs";
import { patchJob, readCounters, shardScope } from "./status";
import { recordUsage, requireUsage } from "./usage";
import { workerArgs } from "./validators";

const LEASE_LOST = { ok: false, reason: "lease_lost" } as const;
// Staged docs deleted per run, by their content's size: a run reads at most this (and one doc more).
const PURGE_BYTES = 4 << 20;

/** The lease is ours only if the token is the current one and has not run out. */
async function leasedJob(ctx: MutationCtx, jobId: string, leaseToken: string) {
  const id = ctx.db.normalizeId("jobs", jobId);
  if (id === null) refuse("invalid_argument", `${JSON.stringify(jobId)} is not a job id`);
  const job = await ctx.db.get(id);
  if (job === null) refuse("not_found", `job ${jobId} does not exist`);
  const held =
    job.leaseToken !== undefined &&
    job.leaseToken === leaseToken &&
    isActive(job.status) &&
    (job.leaseExpiresAt ?? 0) >= Date.now();
  return held ? job : null;
}

function requireLeaseMs(leaseMs: number): void {
  requireInteger("leaseMs", leaseMs, MIN_LEASE_MS, MAX_LEASE_MS);
}

const endOfLease = {
  leaseOwner: undefined,
  leaseToken: undefined,
  leaseExpiresAt: undefined,
};

/** Drops an ended attempt's staged docs, a batch of at most PURGE_BYTES per run (Convex bounds a mutation's reads). */
async function discardAttemptDocs(ctx: MutationCtx, jobId: Id<"jobs">, leaseToken: string) {
  await ctx.scheduler.runAfter(0, internal.worker.purgeAttemptDocs, { jobId, leaseToken });
}

export const purgeAttemptDocs = internalMutation({
  args: { jobId: v.id("jobs"), leaseToken: v.string() },
  handler: async (ctx, { jobId, leaseToken }) => {
    const job = await ctx.db.get(jobId);
    if (job !== null && (job.docsLeaseToken === leaseToken || job.leaseToken === leaseToken)) {
      return; // these docs are the job's result or still being written
    }
    const { page, more } = await takeBytes(
      ctx.db.query("docs").withIndex("by_job_lease_chapter", (q) => q.eq("jobId", jobId).eq("leaseToken", leaseToken)),
      PURGE_BYTES,
      (doc) => doc.content.length,
    );
    for (const staleDoc of page) await ctx.db.delete(staleDoc._id);
    if (more) await discardAttemptDocs(ctx, jobId, leaseToken);
  },
});

/** The oldest due job of one shard (by_shard_status_availableAt is ordered by availableAt). */
async function dueInShard(ctx: MutationCtx, shard: number, now: number): Promise<Doc<"jobs"> | null> {
  return await ctx.db
    .query("jobs")
    .withIndex("by_shard_status_availableAt", (q) => q.eq("shard", shard).eq("status", "pending").lte("availableAt", now))
    .first();
}

/** Has the lease's reaper run when the lease ends (just after: a lease is held up to leaseExpiresAt included). */
export async function scheduleReaper(ctx: MutationCtx, jobId: Id<"jobs">, leaseToken: string, leaseExpiresAt: number) {
  await ctx.scheduler.runAt(leaseExpiresAt + 1, internal.worker.reapLease, { jobId, leaseToken });
}

/**
 * A claim starts at a random shard and walks the others, taking the oldest due job of the first
 * shard that has one: claims made at once mostly read and write different shards (and counters),
 * so they do not conflict; within a shard, oldest first.
 */
export const claim = mutation({
  args: workerArgs.claim,
  handler: async (ctx, { workerToken, workerId, leaseMs }) => {
    requireWorker(workerToken);
    if (workerId.length === 0) refuse("invalid_argument", "workerId must not be empty");
    requireLength("workerId", workerId, 200);
    requireLeaseMs(leaseMs);
    const now = Date.now();
    const start = Math.floor(Math.random() * SHARDS);
    for (let k = 0; k < SHARDS; k++) {
      const job = await dueInShard(ctx, (start + k) % SHARDS, now);
      if (job === null) continue;
      const claims = (job.claims ?? 0) + 1;
      const leaseToken = newLeaseToken(claims);
      const attempt = job.attempts + 1;
      const leaseExpiresAt = now + leaseMs;
      await patchJob(ctx, job, {
        status: "running",
        attempts: attempt,
        claims,
        leaseOwner: workerId,
        leaseToken,
        leaseExpiresAt,
        progress: `Claimed by ${workerId}`,
        currentStep: undefined,
        totalSteps: undefined,
        error: undefined,
        errorKind: undefined,
        failureRetryable: undefined,
        updatedAt: now,
      });
      await scheduleReaper(ctx, job._id, leaseToken, leaseExpiresAt);
      const claimed = (await ctx.db.get(job._id))!;
      return { job: { ...claimed, leaseToken: undefined }, leaseToken, attempt };
    }
    return null;
  },
});

/**
 * The lease's reaper, scheduled by the claim at the lease's end. An attempt that ended, or a
 * lease taken over, makes it a no-op; a lease that heartbeats extended has it run again at the
 * new end (so heartbeats schedule nothing). A lease that did run out ends the attempt: the job is
 * queued again (the attempt counted), or, past its attempts, failed (canceled if asked).
 */
export const reapLease = internalMutation({
  args: { jobId: v.id("jobs"), leaseToken: v.string() },
  handler: async (ctx, { jobId, leaseToken }) => {
    const job = await ctx.db.get(jobId);
    if (job === null || job.leaseToken !== leaseToken || !isActive(job.status)) return;
    const now = Date.now();
    if (job.leaseExpiresAt! >= now) {
      await scheduleReaper(ctx, jobId, leaseToken, job.leaseExpiresAt!);
      return;
    }
    const leaseExpiries = (job.leaseExpiries ?? 0) + 1;
    await discardAttemptDocs(ctx, jobId, leaseToken);
    const ended = { ...endOfLease, leaseExpiries, updatedAt: now };
    if (job.cancelRequested) {
      await patchJob(ctx, job, { ...ended, status: "canceled", finishedAt: now });
    } else if (job.attempts >= job.maxAttempts) {
      await patchJob(ctx, job, {
        ...ended,
        status: "failed",
        errorKind: LEASE_EXPIRED,
        failureRetryable: true,
        error:
          `the worker's lease expired ${leaseExpiries} time(s) (last worker: ${job.leaseOwner}); ` +
          `gave up after ${job.attempts} of ${job.maxAttempts} attempts`,
        finishedAt: now,
      });
    } else {
      await patchJob(ctx, job, {
        ...ended,
        status: "pending",
        availableAt: now,
        progress: `Queued again: the lease of ${job.leaseOwner} expired`,
      });
    }
  },
});

export const heartbeat = mutation({
  args: workerArgs.heartbeat,
  handler: async (ctx, { workerToken, jobId, leaseToken, leaseMs, logs, usage, ...report }) => {
    requireWorker(workerToken);
    requireLeaseMs(leaseMs);
    requireLogs(logs);
    requireUsage(usage);
    if (report.progress !== undefined) requireLength("progress", report.progress, MAX_PROGRESS_LENGTH);
    if (report.currentStep !== undefined) requireInteger("currentStep", report.currentStep, 0, MAX_STEP);
    if (report.totalSteps !== undefined) requireInteger("totalSteps", report.totalSteps, 0, MAX_STEP);
    const job = await leasedJob(ctx, jobId, leaseToken);
    if (job === null) return LEASE_LOST;
    const now = Date.now();
    const changes = Object.fromEntries(Object.entries(report).filter(([, value]) => value !== undefined));
    await patchJob(ctx, job, { ...changes, leaseExpiresAt: now + leaseMs, updatedAt: now });
    await recordUsage(ctx, job, usage);
    await appendLogs(ctx, job._id, logs);
    return { ok: true, cancelRequested: job.cancelRequested === true };
  },
});

export const saveDocs = mutation({
  args: workerArgs.saveDocs,
  handler: async (ctx, { workerToken, jobId, leaseToken, docs }) => {
    requireWorker(workerToken);
    if (docs.length > MAX_DOCS_PER_CALL) {
      refuse("invalid_argument", `at most ${MAX_DOCS_PER_CALL} docs per call, got ${docs.length}`);
    }
    const encoder = new TextEncoder();
    const size = (content: string) => encoder.encode(content).length;
    let callBytes = 0;
    for (const { title, slug, kind, chapterIndex, content } of docs) {
      requireLength("title", title, MAX_TITLE_LENGTH);
      if (!SLUG_PATTERN.test(slug)) {
        refuse("invalid_argument", `slug ${JSON.stringify(slug)} must be 1-200 of a-z 0-9 . _ - (lower case)`);
      }
      requireInteger("chapterIndex", chapterIndex, 0, MAX_DOCS_PER_JOB);
      const bytes = size(content);
      if (bytes > MAX_DOC_CONTENT_BYTES) {
        refuse("invalid_argument", `doc ${slug} is ${bytes} bytes; a document holds at most ${MAX_DOC_CONTENT_BYTES}`);
      }
      callBytes += bytes;
    }
    if (callBytes > MAX_BYTES_PER_CALL) {
      refuse("invalid_argument", `${callBytes} bytes of docs in one call; send at most ${MAX_BYTES_PER_CALL}`);
    }
    const job = await leasedJob(ctx, jobId, leaseToken);
    if (job === null) return LEASE_LOST;
    const staged = job.staged?.leaseToken === leaseToken ? { ...job.staged } : { leaseToken, docs: 0, bytes: 0 };
    for (const d of docs) {
      // Keyed by slug within the attempt, so a call repeated after a lost response adds nothing.
      const existing = await ctx.db
        .query("docs")
        .withIndex("by_job_lease_slug", (q) => q.eq("jobId", job._id).eq("leaseToken", leaseToken).eq("slug", d.slug))
        .unique();
      if (existing !== null) {
        await ctx.db.replace(existing._id, { ...d, jobId: job._id, leaseToken });
        staged.bytes += size(d.content) - size(existing.content);
      } else {
        await ctx.db.insert("docs", { ...d, jobId: job._id, leaseToken });
        staged.docs++;
        staged.bytes += size(d.content);
      }
    }
    if (staged.docs > MAX_DOCS_PER_JOB) refuse("invalid_argument", `a job holds at most ${MAX_DOCS_PER_JOB} docs`);
    await ctx.db.patch(job._id, { staged });
    return { ok: true, saved: docs.length };
  },
});

export const complete = mutation({
  args: workerArgs.complete,
  handler: async (ctx, { workerToken, jobId, leaseToken, summary, logs, usage }) => {
    requireWorker(workerToken);
    requireLogs(logs);
    requireUsage(usage);
    const job = await leasedJob(ctx, jobId, leaseToken);
    if (job === null) {
      // A repeated call whose first answer was lost (a read timeout): it did complete the job.
      const done = await ctx.db.get(ctx.db.normalizeId("jobs", jobId)!);
      return done?.status === "completed" && done.docsLeaseToken === leaseToken ? { ok: true } : LEASE_LOST;
    }
    await appendLogs(ctx, job._id, logs);
    await recordUsage(ctx, job, usage);
    const now = Date.now();
    // Other attempts' docs were discarded when those attempts ended; from now on the job's docs
    // are exactly this attempt's.
    await patchJob(ctx, job, {
      ...endOfLease,
      status: "completed",
      docsLeaseToken: leaseToken,
      result: summary,
      progress: "Completed",
      // A completed job has done every step (6 of 6), whatever the last heartbeat said.
      currentStep: job.totalSteps,
      cancelRequested: undefined,
      updatedAt: now,
      finishedAt: now,
    });
    return { ok: true };
  },
});

export const fail = mutation({
  args: workerArgs.fail,
  handler: async (ctx, { workerToken, jobId, leaseToken, error, errorKind, retryable, logs, usage }) => {
    requireWorker(workerToken);
    requireErrorKind("errorKind", errorKind);
    requireLogs(logs);
    requireUsage(usage);
    const job = await leasedJob(ctx, jobId, leaseToken);
    if (job === null) return LEASE_LOST;
    await appendLogs(ctx, job._id, logs);
    await recordUsage(ctx, job, usage);
    const now = Date.now();
    const message = error.length > MAX_ERROR_LENGTH ? `${error.slice(0, MAX_ERROR_LENGTH - 1)}…` : error;
    await discardAttemptDocs(ctx, job._id, leaseToken);
    const willRetry = retryable && !job.cancelRequested && job.attempts < job.maxAttempts;
    if (willRetry) {
      const availableAt = now + backoffMs(job.attempts);
      await patchJob(ctx, job, {
        ...endOfLease,
        status: "pending",
        availableAt,
        error: message,
        errorKind,
        failureRetryable: retryable,
        progress: `Retrying after attempt ${job.attempts} of ${job.maxAttempts} failed`,
        updatedAt: now,
      });
      return { ok: true, willRetry, availableAt };
    }
    await patchJob(ctx, job, {
      ...endOfLease,
      status: job.cancelRequested ? "canceled" : "failed",
      error: message,
      errorKind,
      failureRetryable: retryable,
      updatedAt: now,
      finishedAt: now,
    });
    return { ok: true, willRetry };
  },
});

export const release = mutation({
  args: workerArgs.release,
  handler: async (ctx, { workerToken, jobId, leaseToken, reason, hostFailureKind, logs, usage }) => {
    requireWorker(workerToken);
    requireLength("reason", reason, MAX_PROGRESS_LENGTH);
    if (hostFailureKind !== undefined) requireErrorKind("hostFailureKind", hostFailureKind);
    requireLogs(logs);
    requireUsage(usage);
    const job = await leasedJob(ctx, jobId, leaseToken);
    if (job === null) return LEASE_LOST;
    await appendLogs(ctx, job._id, logs);
    await recordUsage(ctx, job, usage);
    const now = Date.now();
    await discardAttemptDocs(ctx, job._id, leaseToken);
    if (job.cancelRequested) {
      await patchJob(ctx, job, { ...endOfLease, status: "canceled", updatedAt: now, finishedAt: now });
      return { ok: true };
    }
    const hostReleases = (job.hostReleases ?? 0) + (hostFailureKind === undefined ? 0 : 1);
    if (hostFailureKind !== undefined && hostReleases >= MAX_HOST_RELEASES) {
      await patchJob(ctx, job, {
        ...endOfLease,
        status: "failed",
        hostReleases,
        error: `released ${hostReleases} times for host problems, the last: ${reason}`,
        errorKind: hostFailureKind,
        failureRetryable: true,
        updatedAt: now,
        finishedAt: now,
      });
      return { ok: true, failed: true };
    }
    await patchJob(ctx, job, {
      ...endOfLease,
      status: "pending",
      attempts: job.attempts - 1, // a released attempt does not count
      hostReleases,
      availableAt: now,
      progress: `Released: ${reason}`,
      currentStep: undefined,
      totalSteps: undefined,
      updatedAt: now,
    });
    return { ok: true };
  },
});

export const canceled = mutation({
  args: workerArgs.canceled,
  handler: async (ctx, { workerToken, jobId, leaseToken, logs, usage }) => {
    requireWorker(workerToken);
    requireLogs(logs);
    requireUsage(usage);
    const job = await leasedJob(ctx, jobId, leaseToken);
    if (job === null) return LEASE_LOST;
    if (!job.cancelRequested) refuse("conflict", `job ${jobId} has no cancel request to acknowledge`);
    await appendLogs(ctx, job._id, logs);
    await recordUsage(ctx, job, usage);
    const now = Date.now();
    await discardAttemptDocs(ctx, job._id, leaseToken);
    await patchJob(ctx, job, {
      ...endOfLease,
      status: "canceled",
      progress: "Canceled",
      updatedAt: now,
      finishedAt: now,
    });
    return { ok: true };
  },
});

/** The smallest availableAt of the pending jobs (the head of each shard's), or null: none is pending. */
async function earliestPending(ctx: QueryCtx): Promise<number | null> {
  let earliest: number | null = null;
  for (let shard = 0; shard < SHARDS; shard++) {
    const head = await ctx.db
      .query("jobs")
      .withIndex("by_shard_status_availableAt", (q) => q.eq("shard", shard).eq("status", "pending"))
      .first();
    if (head !== null && (earliest === null || head.availableAt < earliest)) earliest = head.availableAt;
  }
  return earliest;
}

/**
 * How deep the queue is, for the agents' metrics: pending jobs (due, or backing off before a
 * retry), when the longest-waiting one became (or becomes) available, and active jobs. Reads the
 * counters (status.ts) and the head of each shard's pending jobs: a few small documents whatever
 * the queue holds, and the same answer for every agent (no clock), so a subscription to it re-runs
 * only when those change.
 */
export const queueDepth = query({
  args: workerArgs.queueDepth,
  handler: async (ctx, { workerToken }) => {
    requireWorker(workerToken);
    let pending = 0;
    let active = 0;
    for (let shard = 0; shard < SHARDS; shard++) {
      const counts = await readCounters(ctx, shardScope(shard));
      pending += counts.pending ?? 0;
      for (const status of ACTIVE_STATUSES) active += counts[status] ?? 0;
    }
    // `capped` is always false (the counts are exact): kept for agents that still read it.
    return { pending, oldestPendingAvailableAt: await earliestPending(ctx), active, capped: false };
  },
});

/**
 * What an idle agent waits for, made to be subscribed to: when the earliest pending job is (or
 * becomes) due. No clock here (a query must not read it): the agent compares with its own and
 * claims at that moment. null: no pending job. It reads only the head of each shard's pending
 * jobs, so heartbeats and the rest of the running jobs' traffic never re-run it: expired leases
 * come back as pending jobs through their reaper (reapLease).
 */
export const nextDue = query({
  args: workerArgs.nextDue,
  handler: async (ctx, { workerToken }) => {
    requireWorker(workerToken);
    return { pendingAvailableAt: await earliestPending(ctx) };
  },
});
