// The queue component as this app installed it, and what its jobs:* and operator:* share.
import { v } from "convex/values";
import { FondationQueue } from "../queue/client";
import { components } from "./_generated/api";

export const queue = new FondationQueue(components.fondationQueue);

export const enqueueArgs = {
  repositoryUrl: v.string(),
  branch: v.optional(v.string()),
  prompt: v.string(),
  dedupKey: v.optional(v.string()),
  maxAttempts: v.optional(v.number()),
};
