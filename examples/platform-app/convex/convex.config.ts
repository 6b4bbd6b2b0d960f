// A platform's app (shaped like Salwen92/fondation-web-app: its users, repositories and docs) that
// installs the queue component next to its own tables. See docs/platform.md.
import { defineApp } from "convex/server";
import { v } from "convex/values";
import fondationQueue from "../../../queue/component/convex.config.js";

const app = defineApp({
  env: {
    FONDATION_WORKER_TOKEN: v.optional(v.string()),
    // Demo and test deployments only: any repository URL is queued (tests clone local repositories).
    FONDATION_ACCEPT_ANY_REPOSITORY_URL: v.optional(v.string()),
    // Where repositories are cloned from: `${base}/${fullName}` (default https://github.com).
    PLATFORM_GIT_BASE_URL: v.optional(v.string()),
  },
});
app.use(fondationQueue, {
  env: {
    FONDATION_WORKER_TOKEN: app.env.FONDATION_WORKER_TOKEN,
    FONDATION_ACCEPT_ANY_REPOSITORY_URL: app.env.FONDATION_ACCEPT_ANY_REPOSITORY_URL,
  },
});
export default app;
