// The queue as a Convex component: its own tables and functions, installed by a host app with
// app.use(fondationQueue, { env: {...} }). Its settings are the component's own env vars, which
// the host binds (by value or to its own env vars); a component cannot read the app's.
import { defineComponent } from "convex/server";
import { v } from "convex/values";

export default defineComponent("fondationQueue", {
  env: {
    // The shared secret every worker call must carry; unset or empty, every worker call is refused.
    FONDATION_WORKER_TOKEN: v.optional(v.string()),
    // "1" lets any repository URL and branch be queued: demo and test deployments only.
    FONDATION_ACCEPT_ANY_REPOSITORY_URL: v.optional(v.string()),
  },
});
