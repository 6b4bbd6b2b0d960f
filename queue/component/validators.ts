// Argument shapes shared by the component's functions and the client class that wraps them, so
// the app's worker:* take exactly what the component's worker functions take.
import { type Infer, v } from "convex/values";
import { ACTIVE_STATUSES, ALL_STATUSES, DOC_KINDS, LOG_LEVELS } from "./lib";

export const jobStatus = v.union(...ALL_STATUSES.map((status) => v.literal(status)));
const activeStatus = v.union(...ACTIVE_STATUSES.map((status) => v.literal(status)));
export const docKind = v.union(...DOC_KINDS.map((kind) => v.literal(kind)));

const docInput = v.object({
  title: v.string(),
  slug: v.string(),
  kind: docKind,
  chapterIndex: v.number(),
  content: v.string(),
});

/** One line of the CLI's output, as the agent cleaned it for the journal. */
export const logLine = v.object({ level: v.union(...LOG_LEVELS.map((level) => v.literal(level))), text: v.string() });

/** A job's Claude usage (usage.ts): what the agent read from the Claude gateway. */
export const usage = v.object({
  inputTokens: v.number(),
  outputTokens: v.number(),
  cacheReadTokens: v.number(),
  cacheCreationTokens: v.number(),
  requests: v.number(),
});
export type Usage = Infer<typeof usage>;

const leased = { workerToken: v.string(), jobId: v.string(), leaseToken: v.string() };
// The CLI's lines since the last call, oldest first: appended to the job's tail. The attempt's last
// call carries them too, so the live logs end with the CLI's last words (its error, say).
// `usage`: the attempt's Claude usage so far (usage.ts).
const withLogs = { ...leased, logs: v.optional(v.array(logLine)), usage: v.optional(usage) };

/** The worker functions' arguments, by function name. */
export const workerArgs = {
  claim: { workerToken: v.string(), workerId: v.string(), leaseMs: v.number() },
  heartbeat: {
    ...withLogs,
    leaseMs: v.number(),
    status: v.optional(activeStatus),
    progress: v.optional(v.string()),
    currentStep: v.optional(v.number()),
    totalSteps: v.optional(v.number()),
  },
  saveDocs: { ...leased, docs: v.array(docInput) },
  complete: { ...withLogs, summary: v.optional(v.any()) },
  fail: { ...withLogs, error: v.string(), errorKind: v.string(), retryable: v.boolean() },
  // hostFailureKind: the release is for this host's problem (an error kind), counted towards MAX_HOST_RELEASES.
  release: { ...withLogs, reason: v.string(), hostFailureKind: v.optional(v.string()) },
  canceled: withLogs,
  // `now`: sent by agents of earlier versions (their clock, ms), and unused: the answer is the same for every agent.
  queueDepth: { workerToken: v.string(), now: v.optional(v.number()) },
  nextDue: { workerToken: v.string() },
};

/** What is asked of a job: the arguments a host app's own enqueue functions take. */
export const jobRequest = {
  repositoryUrl: v.string(),
  branch: v.optional(v.string()),
  prompt: v.string(),
  dedupKey: v.optional(v.string()),
  maxAttempts: v.optional(v.number()),
};

/** A host app's mutation (a function handle) the queue runs about a job, and the context it gets. */
export const callbackArg = v.object({ handle: v.string(), context: v.optional(v.any()) });
