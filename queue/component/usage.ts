// A job's Claude usage, as the agent reads it from the Claude gateway: tokens and requests, summed
// over the job's attempts. Each attempt reports its own running total (worker:heartbeat and its last
// call); the job keeps the last total per claim, so a repeated call adds nothing and an attempt whose
// lease expired keeps what it reported.
import type { Doc } from "./_generated/dataModel";
import type { MutationCtx } from "./_generated/server";
import { requireInteger } from "./lib";
import type { Usage } from "./validators";

const FIELDS = ["inputTokens", "outputTokens", "cacheReadTokens", "cacheCreationTokens", "requests"] as const;
const NONE: Usage = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheCreationTokens: 0, requests: 0 };

export function requireUsage(usage: Usage | undefined): void {
  for (const field of usage === undefined ? [] : FIELDS) {
    requireInteger(`usage.${field}`, usage![field], 0, Number.MAX_SAFE_INTEGER);
  }
}

/** Records that the job's current attempt (its claim `job.claims`, as read before this call's
 * changes) has used `usage` so far. */
export async function recordUsage(ctx: MutationCtx, job: Doc<"jobs">, usage: Usage | undefined): Promise<void> {
  if (usage === undefined) return;
  const claim = job.claims ?? 0;
  const before = job.attemptUsage?.claim === claim ? job.attemptUsage : NONE;
  const total = job.usage ?? NONE;
  const sum = Object.fromEntries(FIELDS.map((f) => [f, total[f] - before[f] + usage[f]])) as Usage;
  await ctx.db.patch(job._id, { usage: sum, attemptUsage: { ...usage, claim } });
}
