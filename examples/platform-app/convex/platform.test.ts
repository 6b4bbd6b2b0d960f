// The platform-shaped app over the registered queue component: a signed-in user queues a course for
// their repository, an agent runs it, and onComplete copies its documents into the app's docs.
import { convexTest } from "convex-test";
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { registerQueue } from "../../../queue/test";
import type { DocKind } from "../../../queue/component/lib";
import { api } from "./_generated/api";
import schema from "./schema";

const modules = import.meta.glob("./**/*.ts");
const TOKEN = "platform-worker-token";

beforeEach(() => {
  vi.useFakeTimers();
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
});
afterEach(() => vi.useRealTimers());

async function setup() {
  const t = convexTest(schema, modules);
  registerQueue(t);
  const { alice, bob, repositoryId } = await t.run(async (ctx) => {
    const alice = await ctx.db.insert("users", { githubId: "1001", username: "alice", createdAt: Date.now() });
    const bob = await ctx.db.insert("users", { githubId: "1002", username: "bob", createdAt: Date.now() });
    const repositoryId = await ctx.db.insert("repositories", {
      userId: alice, githubRepoId: "77", name: "widgets", fullName: "alice/widgets", defaultBranch: "main",
    });
    return { alice, bob, repositoryId };
  });
  return {
    t,
    repositoryId,
    ids: { alice, bob },
    alice: t.withIdentity({ subject: "1001" }),
    bob: t.withIdentity({ subject: "1002" }),
  };
}

/** One agent attempt that saves `docs` and completes the job. */
async function runJob(t: Awaited<ReturnType<typeof setup>>["t"], docs: { slug: string; kind: DocKind; chapterIndex: number }[]) {
  const claimed = (await t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: 30_000 }))!;
  const lease = { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken };
  await t.mutation(api.worker.saveDocs, {
    ...lease,
    docs: docs.map((d) => ({ ...d, title: d.slug.toUpperCase(), content: `# ${d.slug}` })),
  });
  await t.mutation(api.worker.complete, lease);
  await t.finishAllScheduledFunctions(vi.runAllTimers);
  return claimed;
}

test("a user's course: queued for their repository, run by an agent, copied into the platform's docs", async () => {
  const { t, alice, repositoryId, ids } = await setup();
  const jobId = await alice.mutation(api.courses.generate, { repositoryId });
  expect(await alice.mutation(api.courses.generate, { repositoryId })).toBe(jobId); // one unfinished per repository

  const claimed = await runJob(t, [
    { slug: "toc", kind: "toc", chapterIndex: 0 },
    { slug: "one", kind: "chapter", chapterIndex: 1 },
    { slug: "setup", kind: "tutorial", chapterIndex: 2 },
  ]);
  expect(claimed.job).toMatchObject({ repositoryUrl: "https://github.com/alice/widgets", branch: "main", userId: ids.alice, repositoryId });
  expect(await alice.query(api.courses.job, { jobId })).toMatchObject({ status: "completed" });
  const course = await alice.query(api.courses.course, { repositoryId });
  expect(course.map((d) => [d.slug, d.kind, d.jobId, d.repositoryId])).toEqual([
    ["toc", "toc", jobId, repositoryId],
    ["one", "chapter", jobId, repositoryId],
    ["setup", "tutorial", jobId, repositoryId],
  ]);
  expect(course.every((d) => typeof d.createdAt === "number")).toBe(true);

  // A new course of the repository replaces the old one.
  const second = await alice.mutation(api.courses.generate, { repositoryId });
  await runJob(t, [{ slug: "only", kind: "tutorial", chapterIndex: 1 }]);
  expect((await alice.query(api.courses.course, { repositoryId })).map((d) => [d.slug, d.jobId])).toEqual([["only", second]]);
});

test("only the repository's owner may queue it or see its job and course; strangers are refused", async () => {
  const { t, alice, bob, repositoryId } = await setup();
  await expect(t.mutation(api.courses.generate, { repositoryId })).rejects.toThrow(/sign in first/);
  await expect(t.withIdentity({ subject: "9999" }).mutation(api.courses.generate, { repositoryId })).rejects.toThrow(/no platform account/);
  await expect(bob.mutation(api.courses.generate, { repositoryId })).rejects.toThrow(/no such repository of yours/);
  const jobId = await alice.mutation(api.courses.generate, { repositoryId });
  expect(await bob.query(api.courses.job, { jobId })).toBeNull();
  await expect(bob.mutation(api.courses.cancel, { jobId })).rejects.toThrow(/does not exist/);
  await runJob(t, [{ slug: "one", kind: "chapter", chapterIndex: 1 }]);
  expect(await bob.query(api.courses.course, { repositoryId })).toEqual([]);
});
