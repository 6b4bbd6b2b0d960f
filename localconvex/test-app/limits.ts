// Functions that read, write, scan, run and return as much as they are told (limits.test.ts).
import { makeFunctionReference } from "convex/server";
import { v } from "convex/values";
import { mutation, query } from "./_generated/server";

/** Inserts `count` items of `size` characters into `group`. */
export const insert = mutation({
  args: { group: v.number(), count: v.number(), size: v.number() },
  handler: async (ctx, { group, count, size }) => {
    for (let i = 0; i < count; i++) await ctx.db.insert("items", { group, text: "x".repeat(size) });
    return null;
  },
});

/** Reads every item of `group`: documents and bytes read. */
export const readGroup = query({
  args: { group: v.number() },
  handler: async (ctx, { group }) => (await ctx.db.query("items").withIndex("by_group", (q) => q.eq("group", group)).collect()).length,
});

/** One index range per iteration. */
export const ranges = query({
  args: { count: v.number() },
  handler: async (ctx, { count }) => {
    for (let i = 0; i < count; i++) await ctx.db.query("empty").withIndex("by_group", (q) => q.eq("group", -1 - i)).first();
    return count;
  },
});

/** Busy for `ms` milliseconds, then writes an item (which must not stay if the call fails). */
export const slow = mutation({
  args: { ms: v.number() },
  handler: async (ctx, { ms }) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
    await ctx.db.insert("items", { group: -100, text: "slow" });
    return null;
  },
});

/** Returns a string of `size` characters. */
export const big = query({ args: { size: v.number() }, handler: async (_ctx, { size }) => "x".repeat(size) });

/** Calls `readGroup` as a nested query: part of this execution, not a second one. */
export const nested = query({
  args: { group: v.number() },
  handler: (ctx, { group }): Promise<number> => ctx.runQuery(makeFunctionReference<"query">("limits:readGroup"), { group }),
});
