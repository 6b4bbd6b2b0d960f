/* eslint-disable */
/**
 * Generated `api` utility (the file `npx convex codegen` writes; kept in the
 * repository as Convex recommends, so the project builds without a deployment).
 */
import { anyApi, componentsGeneric } from "convex/server";

export const api = anyApi;
export const internal = anyApi;
export const components = componentsGeneric();
