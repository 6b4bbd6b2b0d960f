// The platform-shaped app over the registered queue component: the UI's calls, as its pages make
// them, answered from the queue (an agent's part played through worker:*).
import { convexTest } from "convex-test";
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { registerQueue } from "../../../queue/test";
import { api } from "./_generated/api";
import schema from "./schema";

const modules = import.meta.glob("./**/*.ts");
const TOKEN = "platform-worker-token";
const firstPage = (numItems: number) => ({ numItems, cursor: null });

beforeEach(() => {
  vi.useFakeTimers();
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
});
afterEach(() => vi.useRealTimers());

async function setup() {
  const t = convexTest(schema, modules);
  registerQueue(t);
  const alice = await t.mutation(api.users.createOrUpdateUser, { githubId: "1001", username: "alice" });
  const bob = await t.mutation(api.users.createOrUpdateUser, { githubId: "1002", username: "bob" });
  const repositoryId = await t.run((ctx) =>
    ctx.db.insert("repositories", { userId: alice, githubRepoId: "77", name: "widgets", fullName: "alice/widgets", defaultBranch: "main" }),
  );
  const settle = () => t.finishAllScheduledFunctions(vi.runAllTimers);
  const claim = async () => {
    const claimed = (await t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: 30_000 }))!;
    return { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken };
  };
  return { t, alice, bob, repositoryId, settle, claim };
}

test("repo card → job page → course page: one course through the UI's calls", async () => {
  const { t, alice, repositoryId, settle, claim } = await setup();
  const { jobId } = await t.mutation(api.jobs.startAnalysis, { repositoryId, userId: alice, repoUrl: "https://evil.example/x" });
  expect((await t.mutation(api.jobs.create, { userId: alice, repositoryId, prompt: "again" })).jobId).toBe(jobId); // one unfinished per repository
  expect(await t.query(api.jobs.getJobByRepository, { repositoryId })).toMatchObject({ _id: jobId, status: "pending" });

  const lease = await claim();
  expect(await t.query(api.jobs.getJob, { jobId })).toMatchObject({
    repositoryUrl: "https://github.com/alice/widgets", branch: "main", userId: alice, metadata: { fullName: "alice/widgets" },
  });
  await t.mutation(api.worker.heartbeat, {
    ...lease, leaseMs: 30_000, status: "analyzing", currentStep: 2, totalSteps: 6,
    logs: [{ level: "info", text: "[2/6] Analyze: relationships" }],
  });
  expect(await t.query(api.jobs.getLogs, { jobId })).toEqual([{ seq: 0, level: "info", msg: "[2/6] Analyze: relationships" }]);
  const docs = ["toc", "one", "two", "three"].map((slug, chapterIndex) => ({
    slug, chapterIndex, title: slug.toUpperCase(), kind: (chapterIndex === 0 ? "toc" : "chapter") as "toc" | "chapter", content: `# ${slug}`,
  }));
  await t.mutation(api.worker.saveDocs, { ...lease, docs });
  await t.mutation(api.worker.complete, lease);
  await settle();

  expect(await t.query(api.jobs.getById, { id: jobId })).toMatchObject({ status: "completed", currentStep: 6, totalSteps: 6 });
  expect(await t.query(api.jobs.getLatestCompletedByRepository, { repositoryId })).toMatchObject({ _id: jobId });
  const first = await t.query(api.docs.listByJobId, { jobId, paginationOpts: firstPage(3) });
  const rest = await t.query(api.docs.listByJobId, { jobId, paginationOpts: { numItems: 3, cursor: first.continueCursor } });
  expect([...first.page, ...rest.page].map((d) => d.slug)).toEqual(["toc", "one", "two", "three"]);
  expect(rest.isDone).toBe(true);
  expect(await t.query(api.docs.getBySlug, { jobId, slug: "two" })).toMatchObject({ title: "TWO", repositoryId });
  expect(await t.query(api.github.getRepositoryWithMetadata, { repositoryId })).toHaveProperty("lastAnalyzedAt");
  expect((await t.query(api.users.getActivity, { userId: alice })).map((a) => [a.oldStatus, a.newStatus, a.attempt]).reverse()).toEqual([
    ["pending", "running", 1],
    ["running", "analyzing", 1],
    ["analyzing", "completed", 1],
  ]);
  expect(await t.query(api.users.getDashboardStats, { userId: alice })).toMatchObject({ totalRepositories: 1, completedJobs: 1, activeJobs: 0 });
  expect((await t.query(api.jobs.listUserJobs, { userId: alice, paginationOpts: firstPage(10) })).page.map((j) => j._id)).toEqual([jobId]);
});

test("a cancel carries the user's reason to the job and the activity feed; only the owner may cancel", async () => {
  const { t, alice, bob, repositoryId, settle, claim } = await setup();
  const { jobId } = await t.mutation(api.repositories.triggerAnalyze, { repositoryId });
  const lease = await claim();
  await expect(t.mutation(api.jobs.cancelJob, { jobId, userId: bob, reason: "mine now" })).rejects.toThrow(/does not exist/);
  expect(await t.mutation(api.jobs.cancelJob, { jobId, userId: alice, reason: "wrong branch" })).toEqual({ jobId, status: "cancel_requested" });
  await t.mutation(api.worker.canceled, lease);
  await settle();
  expect(await t.query(api.jobs.getJob, { jobId })).toMatchObject({ status: "canceled", error: "wrong branch" });
  expect((await t.query(api.users.getActivity, { userId: alice }))[0]).toMatchObject({ oldStatus: "running", newStatus: "canceled", error: "wrong branch", attempt: 1 });
});

test("a failure reaches onStatusChange with its error and attempt, each attempt's", async () => {
  const { t, alice, repositoryId, settle, claim } = await setup();
  await t.mutation(api.jobs.create, { userId: alice, repositoryId, prompt: "p" });
  const lease = await claim();
  await t.mutation(api.worker.fail, { ...lease, error: "the CLI crashed", errorKind: "crashed", retryable: true });
  await settle();
  expect((await t.query(api.users.getActivity, { userId: alice }))[0]).toMatchObject({
    oldStatus: "running", newStatus: "pending", error: "the CLI crashed", attempt: 1,
  });
});

test("ids that name no repository are refused as invalid_argument, another user's repository as not found", async () => {
  const { t, alice, bob, repositoryId } = await setup();
  for (const bad of ["not-an-id", alice]) {
    await expect(t.query(api.jobs.getJobByRepository, { repositoryId: bad })).rejects.toMatchObject({ data: { code: "invalid_argument" } });
  }
  await expect(t.mutation(api.jobs.create, { userId: bob, repositoryId, prompt: "p" })).rejects.toThrow(/no such repository of yours/);
  expect(await t.run((ctx) => ctx.db.query("activity").collect())).toEqual([]);
});
