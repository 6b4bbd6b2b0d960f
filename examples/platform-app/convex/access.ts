// The platform's rules over the queue. Its UI passes `userId` as an argument (no Convex auth): these
// functions trust the caller to say who it is — see docs/platform.md for why to move to auth.
import { refuse } from "../../../queue/client";
import type { Doc, Id } from "./_generated/dataModel";
import { env, type MutationCtx, type QueryCtx } from "./_generated/server";
import { queue } from "./queue";

const MAX_UNFINISHED_JOBS_PER_USER = 3;

/** The repository named by an id the UI sent: an id that is not one is the caller's error. */
export async function requireRepository(ctx: QueryCtx, repositoryId: string): Promise<Doc<"repositories">> {
  const id = ctx.db.normalizeId("repositories", repositoryId);
  const repository = id === null ? null : await ctx.db.get(id);
  if (repository === null) refuse("invalid_argument", `${JSON.stringify(repositoryId)} is not a repository id`);
  return repository;
}

/** The repository, if `userId` owns it. */
export async function requireOwnRepository(ctx: QueryCtx, repositoryId: string, userId: Id<"users">) {
  const repository = await requireRepository(ctx, repositoryId);
  if (repository.userId !== userId) refuse("not_found", "no such repository of yours");
  return repository;
}

/** Queues a course of the repository for its owner: one unfinished course per repository. */
export async function analyze(ctx: MutationCtx, repository: Doc<"repositories">, prompt?: string): Promise<string> {
  const base = env.PLATFORM_GIT_BASE_URL || "https://github.com";
  return await queue.enqueue(ctx, {
    repositoryUrl: `${base}/${repository.fullName}`,
    branch: repository.defaultBranch,
    prompt: prompt ?? `Turn ${repository.fullName} into a course`,
    userId: repository.userId,
    repositoryId: repository._id,
    dedupKey: repository._id,
    maxUnfinished: MAX_UNFINISHED_JOBS_PER_USER,
    metadata: { fullName: repository.fullName },
    context: { repositoryId: repository._id },
  });
}
