// A job's live logs: the tail of its CLI's output that agents send with their heartbeats.
import { v, type Infer } from "convex/values";
import type { Id } from "./_generated/dataModel";
import { query, type MutationCtx } from "./_generated/server";
import { visibleJob } from "./jobs";
import { MAX_LOG_BYTES, MAX_LOG_LINE_LENGTH, MAX_LOG_LINES, refuse, requireLength } from "./lib";
import type { logLine } from "./validators";

type LogLine = Infer<typeof logLine>;
const encoder = new TextEncoder();
const size = (line: LogLine) => encoder.encode(line.text).length;

/** What one worker call may carry: checked before anything is written. */
export function requireLogs(lines: LogLine[] | undefined): void {
  if (lines === undefined) return;
  if (lines.length > MAX_LOG_LINES) refuse("invalid_argument", `at most ${MAX_LOG_LINES} log lines per call, got ${lines.length}`);
  for (const line of lines) requireLength("a log line", line.text, MAX_LOG_LINE_LENGTH);
  const bytes = lines.reduce((total, line) => total + size(line), 0);
  if (bytes > MAX_LOG_BYTES) refuse("invalid_argument", `${bytes} bytes of log lines in one call; send at most ${MAX_LOG_BYTES}`);
}

/** Appends to the job's tail and drops its oldest lines past the bounds. */
export async function appendLogs(ctx: MutationCtx, jobId: Id<"jobs">, added: LogLine[] | undefined): Promise<void> {
  if (added === undefined || added.length === 0) return;
  const tail = await ctx.db.query("logs").withIndex("by_job", (q) => q.eq("jobId", jobId)).unique();
  const lines = [...(tail?.lines ?? []), ...added];
  let bytes = (tail?.bytes ?? 0) + added.reduce((total, line) => total + size(line), 0);
  let drop = 0;
  while (lines.length - drop > MAX_LOG_LINES || bytes > MAX_LOG_BYTES) bytes -= size(lines[drop++]);
  const kept = { lines: lines.slice(drop), bytes };
  if (tail === null) await ctx.db.insert("logs", { jobId, ...kept });
  else await ctx.db.patch(tail._id, kept);
}

/** The job's tail of CLI lines, oldest first (none for a job that is not the caller's). */
export const byJob = query({
  args: { jobId: v.string(), userId: v.optional(v.string()) },
  handler: async (ctx, { jobId, userId }) => {
    const job = await visibleJob(ctx, jobId, userId);
    if (job === null) return [];
    const tail = await ctx.db.query("logs").withIndex("by_job", (q) => q.eq("jobId", job._id)).unique();
    return tail?.lines ?? [];
  },
});
