// Who is calling: the signed-in user behind jobs:* and docs:*, and that user's limits.
import { refuse } from "../queue/client";
import { env } from "./_generated/server";

const DEFAULT_MAX_UNFINISHED_JOBS_PER_USER = 5;

/** The caller's identity as the owner of their jobs; anyone else is refused. */
export async function requireUser(ctx: { auth: { getUserIdentity(): Promise<{ tokenIdentifier: string } | null> } }) {
  const identity = await ctx.auth.getUserIdentity();
  if (identity === null) refuse("unauthorized", "sign in first: this function answers signed-in users only");
  // tokenIdentifier is unique per identity provider and subject.
  return { userId: identity.tokenIdentifier };
}

export function maxUnfinishedJobsPerUser(): number {
  const text = env.FONDATION_MAX_UNFINISHED_JOBS_PER_USER;
  if (text === undefined || text === "") return DEFAULT_MAX_UNFINISHED_JOBS_PER_USER;
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 1) {
    throw new Error(`FONDATION_MAX_UNFINISHED_JOBS_PER_USER must be a whole number ≥ 1, not ${JSON.stringify(text)}`);
  }
  return limit;
}
