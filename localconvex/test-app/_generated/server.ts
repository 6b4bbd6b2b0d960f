// localconvex wants a functions directory with _generated/ (as `npx convex dev` makes it);
// this app's functions import what they need from convex/server directly.
export { mutationGeneric as mutation, queryGeneric as query } from "convex/server";
