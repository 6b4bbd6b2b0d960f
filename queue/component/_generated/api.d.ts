/* eslint-disable */
/** Generated `api` utility. */
import type { ApiFromModules, FilterApi, FunctionReference } from "convex/server";
import type * as docs from "../docs.js";
import type * as jobs from "../jobs.js";
import type * as lib from "../lib.js";
import type * as logs from "../logs.js";
import type * as migrations from "../migrations.js";
import type * as status from "../status.js";
import type * as worker from "../worker.js";

declare const fullApi: ApiFromModules<{
  docs: typeof docs;
  jobs: typeof jobs;
  lib: typeof lib;
  logs: typeof logs;
  migrations: typeof migrations;
  status: typeof status;
  worker: typeof worker;
}>;
export declare const api: FilterApi<typeof fullApi, FunctionReference<any, "public">>;
export declare const internal: FilterApi<typeof fullApi, FunctionReference<any, "internal">>;
/** The component's functions as a host app reaches them (`components.<name>.*`). */
export type ComponentApi = typeof api;
