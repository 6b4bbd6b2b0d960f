// Worker-facing queue functions. Every call carries the deployment's worker token, and every call
// after a claim carries the claim's lease token (a fencing token): a worker whose lease expired or
// was taken over is answered {ok:false, reason:"lease_lost"} and writes nothing.
import { v } from "convex/values";
import { internal } from "./_generated/api";
import type { Doc, Id } from "./_generated/dataModel";
import { internalMutation, mutation, query, type MutationCtx } from "./_generated/server";
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
  SLUG_PATTERN,
  requireErrorKind,
} from "./lib";
import { appendLogs, requireLogs } from "./logs";
import { patchJob } from "./status";
import { recordUsage, requireUsage } from "./usage";
import { workerArgs } from "./validators";

const LEASE_LOST = { ok: false, reason: "lease_lost" } as const;
// Stalled jobs past their attempts are failed during a claim; bound that work per call.
const MAX_CANDIDATES_PER_CLAIM = 20;
const PURGE_PAGE = 32;
// worker:queueDepth reads at most this many jobs per status; past it, the answer says "capped".
const DEPTH_COUNT_CAP = 100;

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

/** Drops an ended attempt's staged docs, a page at a time (Convex bounds a mutation's reads). */
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
    const page = await ctx.db
      .query("docs")
      .withIndex("by_job_lease_chapter", (q) => q.eq("jobId", jobId).eq("leaseToken", leaseToken))
      .take(PURGE_PAGE);
    for (const staleDoc of page) await ctx.db.delete(staleDoc._id);
    if (page.length === PURGE_PAGE) await discardAttemptDocs(ctx, jobId, leaseToken);
  },
});

/** The oldest eligible job: pending and due, or active with an expired lease (a stalled job). */
async function oldestEligible(ctx: MutationCtx, now: number): Promise<Doc<"jobs"> | null> {
  let best: Doc<"jobs"> | null = null;
  let bestSince = Infinity;
  const due = await ctx.db
    .query("jobs")
    .withIndex("by_status_availableAt", (q) => q.eq("status", "pending").lte("availableAt", now))
    .first();
  if (due !== null) [best, bestSince] = [due, due.availableAt];
  for (const status of ACTIVE_STATUSES) {
    const stalled = await ctx.db
      .query("jobs")
      .withIndex("by_status_leaseExpiresAt", (q) => q.eq("status", status).lt("leaseExpiresAt", now))
      .first();
    if (stalled !== null && stalled.leaseExpiresAt! < bestSince) {
      [best, bestSince] = [stalled, stalled.leaseExpiresAt!];
    }
  }
  return best;
}

/** A stalled job that cannot be claimed again: canceled if asked, else failed. Returns true if so. */
async function retireStalled(ctx: MutationCtx, job: Doc<"jobs">, now: number): Promise<boolean> {
  const leaseExpiries = (job.leaseExpiries ?? 0) + 1;
  await ctx.db.patch(job._id, { leaseExpiries });
  await discardAttemptDocs(ctx, job._id, job.leaseToken!);
  if (job.cancelRequested) {
    await patchJob(ctx, job, { ...endOfLease, status: "canceled", updatedAt: now, finishedAt: now });
    return true;
  }
  if (job.attempts >= job.maxAttempts) {
    await patchJob(ctx, job, {
      ...endOfLease,
      status: "failed",
      errorKind: LEASE_EXPIRED,
      failureRetryable: true,
      error:
        `the worker's lease expired ${leaseExpiries} time(s) (last worker: ${job.leaseOwner}); ` +
        `gave up after ${job.attempts} of ${job.maxAttempts} attempts`,
      updatedAt: now,
      finishedAt: now,
    });
    return true;
  }
  return false;
}

export const claim = mutation({
  args: workerArgs.claim,
  handler: async (ctx, { workerToken, workerId, leaseMs }) => {
    requireWorker(workerToken);
    if (workerId.length === 0) refuse("invalid_argument", "workerId must not be empty");
    requireLength("workerId", workerId, 200);
    requireLeaseMs(leaseMs);
    const now = Date.now();
    for (let i = 0; i < MAX_CANDIDATES_PER_CLAIM; i++) {
      const job = await oldestEligible(ctx, now);
      if (job === null) return null;
      if (job.status !== "pending" && (await retireStalled(ctx, job, now))) continue;
      const claims = (job.claims ?? 0) + 1;
      const leaseToken = newLeaseToken(claims);
      const attempt = job.attempts + 1;
      await patchJob(ctx, job, {
        status: "running",
        attempts: attempt,
        claims,
        leaseOwner: workerId,
        leaseToken,
        leaseExpiresAt: now + leaseMs,
        progress: `Claimed by ${workerId}`,
        currentStep: undefined,
        totalSteps: undefined,
        error: undefined,
        errorKind: undefined,
        failureRetryable: undefined,
        updatedAt: now,
      });
      const claimed = (await ctx.db.get(job._id))!;
      return { job: { ...claimed, leaseToken: undefined }, leaseToken, attempt };
    }
    return null;
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

/**
 * How deep the queue is, for the agents' metrics: pending jobs that are due at `now` (the caller's
 * clock: a query must not read the time), when the longest-waiting one became due, and active jobs.
 * Reads at most DEPTH_COUNT_CAP + 1 jobs per status through the status indexes; `capped` says a
 * count is "at least".
 */
export const queueDepth = query({
  args: workerArgs.queueDepth,
  handler: async (ctx, { workerToken, now }) => {
    requireWorker(workerToken);
    const due = await ctx.db
      .query("jobs")
      .withIndex("by_status_availableAt", (q) => q.eq("status", "pending").lte("availableAt", now))
      .take(DEPTH_COUNT_CAP + 1);
    let capped = due.length > DEPTH_COUNT_CAP;
    let active = 0;
    for (const status of ACTIVE_STATUSES) {
      const page = await ctx.db
        .query("jobs")
        .withIndex("by_status_leaseExpiresAt", (q) => q.eq("status", status))
        .take(DEPTH_COUNT_CAP + 1);
      active += Math.min(page.length, DEPTH_COUNT_CAP);
      capped ||= page.length > DEPTH_COUNT_CAP;
    }
    return {
      pending: Math.min(due.length, DEPTH_COUNT_CAP),
      // by_status_availableAt is ordered by availableAt: the first due job has waited longest.
      oldestPendingAvailableAt: due.length > 0 ? due[0].availableAt : null,
      active,
      capped,
    };
  },
});

/**
 * What an idle agent waits for, made to be subscribed to: when the earliest pending job is (or
 * becomes) due, and when the earliest active lease runs out (a claim then takes the stalled job
 * over). No clock here (a query must not read it): the agent compares with its own and claims at
 * that moment. null: no such job. The answer changes only when one of the two does, so idle
 * agents hear nothing about the rest of the queue's traffic.
 */
export const nextDue = query({
  args: workerArgs.nextDue,
  handler: async (ctx, { workerToken }) => {
    requireWorker(workerToken);
    const pending = await ctx.db
      .query("jobs")
      .withIndex("by_status_availableAt", (q) => q.eq("status", "pending"))
      .first();
    let leaseExpiresAt: number | null = null;
    for (const status of ACTIVE_STATUSES) {
      const earliest = await ctx.db
        .query("jobs")
        .withIndex("by_status_leaseExpiresAt", (q) => q.eq("status", status).gte("leaseExpiresAt", 0))
        .first();
      const expiry = earliest?.leaseExpiresAt;
      if (expiry !== undefined && (leaseExpiresAt === null || expiry < leaseExpiresAt)) leaseExpiresAt = expiry;
    }
    return { pendingAvailableAt: pending?.availableAt ?? null, leaseExpiresAt };
  },
});
