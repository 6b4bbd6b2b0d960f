// The repository's own app (what localconvex and `make demo` serve, and what a dedicated
// deployment runs): it installs the queue component and exposes worker:*, jobs:*, docs:* and
// operator:* over it. The deployment's environment variables are declared here and handed on.
import { defineApp } from "convex/server";
import { v } from "convex/values";
import fondationQueue from "../queue/component/convex.config.js";

const app = defineApp({
  env: {
    FONDATION_WORKER_TOKEN: v.optional(v.string()),
    FONDATION_ACCEPT_ANY_REPOSITORY_URL: v.optional(v.string()),
    // Unfinished jobs a signed-in user may have at once (default 5).
    FONDATION_MAX_UNFINISHED_JOBS_PER_USER: v.optional(v.string()),
  },
});
app.use(fondationQueue, {
  env: {
    FONDATION_WORKER_TOKEN: app.env.FONDATION_WORKER_TOKEN,
    FONDATION_ACCEPT_ANY_REPOSITORY_URL: app.env.FONDATION_ACCEPT_ANY_REPOSITORY_URL,
  },
});
export default app;
