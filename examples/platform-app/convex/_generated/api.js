/* eslint-disable */
/** Generated `api` utility (hand-written here: `npx convex codegen` needs a deployment). */
import { anyApi, componentsGeneric } from "convex/server";

export const api = anyApi;
export const internal = anyApi;
export const components = componentsGeneric();
