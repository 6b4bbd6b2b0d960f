/* eslint-disable */
/** Generated `api` utility. */
import type { ApiFromModules, FilterApi, FunctionReference } from "convex/server";
import type { ComponentApi } from "../../../../queue/component/_generated/api.js";
import type * as courses from "../courses.js";
import type * as queue from "../queue.js";
import type * as worker from "../worker.js";

declare const fullApi: ApiFromModules<{
  courses: typeof courses;
  queue: typeof queue;
  worker: typeof worker;
}>;
export declare const api: FilterApi<typeof fullApi, FunctionReference<any, "public">>;
export declare const internal: FilterApi<typeof fullApi, FunctionReference<any, "internal">>;
export declare const components: { fondationQueue: ComponentApi };
