/* eslint-disable */
/** Generated `api` utility. */
import type { ApiFromModules, FilterApi, FunctionReference } from "convex/server";
import type { ComponentApi } from "../../../../queue/component/_generated/api.js";
import type * as access from "../access.js";
import type * as docs from "../docs.js";
import type * as github from "../github.js";
import type * as jobs from "../jobs.js";
import type * as queue from "../queue.js";
import type * as repositories from "../repositories.js";
import type * as users from "../users.js";
import type * as worker from "../worker.js";

declare const fullApi: ApiFromModules<{
  access: typeof access;
  docs: typeof docs;
  github: typeof github;
  jobs: typeof jobs;
  queue: typeof queue;
  repositories: typeof repositories;
  users: typeof users;
  worker: typeof worker;
}>;
export declare const api: FilterApi<typeof fullApi, FunctionReference<any, "public">>;
export declare const internal: FilterApi<typeof fullApi, FunctionReference<any, "internal">>;
export declare const components: { fondationQueue: ComponentApi };
