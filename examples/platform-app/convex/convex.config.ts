// A platform-shaped app (its own users, repositories and docs) that installs the queue component
// next to its tables: the way the platform's own Convex app does it.
import { defineApp } from "convex/server";
import { v } from "convex/values";
import fondationQueue from "../../../queue/component/convex.config.js";

const app = defineApp({ env: { FONDATION_WORKER_TOKEN: v.optional(v.string()) } });
app.use(fondationQueue, { env: { FONDATION_WORKER_TOKEN: app.env.FONDATION_WORKER_TOKEN } });
export default app;
