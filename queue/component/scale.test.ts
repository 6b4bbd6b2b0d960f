// The component's functions within Convex's limits (convex-test enforcing them, with Convex's numbers:
// 16 MiB and 32,000 documents read, 16 MiB and 16,000 documents written per transaction).
import { convexTest } from "convex-test";
import { beforeEach, expect, test } from "vitest";
import { api } from "./_generated/api";
import { MAX_DOCS_PER_JOB } from "./lib";
import schema from "./schema";

const modules = import.meta.glob("./**/*.*s");
const TOKEN = "test-worker-token";
const DOC_BYTES = 50 * 1024;
const PER_CALL = 50;

beforeEach(() => {
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
});

test("a job of 1,000 documents of 50 KB saves every one within the limits, its count and bytes kept as counters", async () => {
  expect(MAX_DOCS_PER_JOB).toBe(1000);
  const t = convexTest({ schema, modules, transactionLimits: true });
  const jobId = await t.mutation(api.jobs.enqueue, { repositoryUrl: "https://github.com/acme/widgets", prompt: "p" });
  const claimed = await t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: 600_000 });
  expect(claimed?.job._id).toBe(jobId);
  const content = "x".repeat(DOC_BYTES);
  const doc = (i: number) => ({ title: `Doc ${i}`, slug: `doc-${i}`, kind: "chapter" as const, chapterIndex: i, content });
  const save = (from: number, count: number) =>
    t.mutation(api.worker.saveDocs, {
      workerToken: TOKEN,
      jobId,
      leaseToken: claimed!.leaseToken,
      docs: Array.from({ length: count }, (_, k) => doc(from + k)),
    });
  for (let from = 0; from < MAX_DOCS_PER_JOB; from += PER_CALL) expect(await save(from, PER_CALL)).toEqual({ ok: true, saved: PER_CALL });
  // A call repeated after a lost answer adds nothing; one more document is one too many.
  expect(await save(0, PER_CALL)).toEqual({ ok: true, saved: PER_CALL });
  await expect(save(MAX_DOCS_PER_JOB, 1)).rejects.toThrow(`a job holds at most ${MAX_DOCS_PER_JOB} docs`);
  const staged = await t.run(async (ctx) => (await ctx.db.get(ctx.db.normalizeId("jobs", jobId)!))!.staged);
  expect(staged).toEqual({ leaseToken: claimed!.leaseToken, docs: MAX_DOCS_PER_JOB, bytes: MAX_DOCS_PER_JOB * DOC_BYTES });
}, 300_000);
