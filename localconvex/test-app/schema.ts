// A small app that crosses each of Convex's limits on demand (localconvex/limits.test.ts).
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  items: defineTable({ group: v.number(), text: v.string() }).index("by_group", ["group"]),
  // Never written: ranges over it cost nothing but the range (convex-test scans a table per range).
  empty: defineTable({ group: v.number() }).index("by_group", ["group"]),
});
