// Upgrading a deployment whose jobs were queued before shards and counters existed: each such job
// gets a shard and is counted in the same transaction (status.ts counts only jobs with a shard, so
// the counters are exact whatever runs meanwhile), and an active one gets its lease's reaper (the
// claim that leased it scheduled none). A batch at a time, the next one scheduled, until none is left.
import { v } from "convex/values";
import { internal } from "./_generated/api";
import { internalMutation, mutation, query, type MutationCtx } from "./_generated/server";
import { isActive, takeBytes } from "./lib";
import { countJob, newShard } from "./status";
import { scheduleReaper } from "./worker";

// Jobs read per batch, by their size as JSON: well under Convex's 16 MiB per transaction.
const BATCH_BYTES = 4 << 20;

async function backfillBatch(ctx: MutationCtx): Promise<{ backfilled: number; more: boolean }> {
  const { page, more } = await takeBytes(
    ctx.db.query("jobs").withIndex("by_shard_status_availableAt", (q) => q.eq("shard", undefined)),
    BATCH_BYTES,
    (job) => JSON.stringify(job).length,
  );
  for (const job of page) {
    const shard = newShard();
    await ctx.db.patch(job._id, { shard });
    await countJob(ctx, { ...job, shard }, 1);
    if (isActive(job.status) && job.leaseToken !== undefined && job.leaseExpiresAt !== undefined) {
      await scheduleReaper(ctx, job._id, job.leaseToken, job.leaseExpiresAt);
    }
  }
  if (more) await ctx.scheduler.runAfter(0, internal.migrations.backfillNext, {});
  return { backfilled: page.length, more };
}

/** Starts the backfill (the host app's operator:backfill): the first batch, the rest scheduled. Running it again is harmless. */
export const backfill = mutation({ args: {}, handler: backfillBatch });

export const backfillNext = internalMutation({ args: {}, handler: async (ctx) => void (await backfillBatch(ctx)) });

/** Whether jobs without a shard remain (the backfill has not finished, or was never run). */
export const backfillPending = query({
  args: {},
  handler: async (ctx) => {
    const job = await ctx.db
      .query("jobs")
      .withIndex("by_shard_status_availableAt", (q) => q.eq("shard", undefined))
      .first();
    return job !== null;
  },
});
