import { convexTest } from "convex-test";
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import schema from "./schema";

const modules = import.meta.glob("./**/*.*s");
const TOKEN = "test-worker-token";
const LEASE = 30_000;

beforeEach(() => {
  vi.useFakeTimers();
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
});
afterEach(() => vi.useRealTimers());

function setup() {
  const t = convexTest(schema, modules);
  const enqueue = () => t.mutation(api.jobs.enqueue, { repositoryUrl: "https://github.com/acme/widgets", prompt: "p" });
  const claim = () => t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: LEASE });
  const depth = (now = Date.now()) => t.query(api.worker.queueDepth, { workerToken: TOKEN, now });
  return { t, enqueue, claim, depth };
}

test("an empty queue", async () => {
  const { depth } = setup();
  expect(await depth()).toEqual({ pending: 0, oldestPendingAvailableAt: null, active: 0, capped: false });
});

test("counts due pending and active jobs, and gives when the longest-waiting job became due", async () => {
  const { enqueue, claim, depth } = setup();
  const firstDue = Date.now();
  await enqueue();
  vi.advanceTimersByTime(1_000);
  await enqueue();
  await enqueue();
  await claim(); // takes the oldest
  expect(await depth()).toEqual({
    pending: 2,
    oldestPendingAvailableAt: firstDue + 1_000,
    active: 1,
    capped: false,
  });
});

test("a job backing off before a retry is not due yet", async () => {
  const { t, enqueue, claim, depth } = setup();
  await enqueue();
  const claimed = (await claim())!;
  const failed = await t.mutation(api.worker.fail, {
    workerToken: TOKEN,
    jobId: claimed.job._id,
    leaseToken: claimed.leaseToken,
    error: "boom",
    errorKind: "cli_failed",
    retryable: true,
  });
  if (!("availableAt" in failed) || failed.availableAt === undefined) throw new Error("expected a retry");
  // The caller's clock decides what is due.
  expect(await depth(failed.availableAt - 1)).toMatchObject({ pending: 0, active: 0 });
  expect(await depth(failed.availableAt)).toMatchObject({ pending: 1, oldestPendingAvailableAt: failed.availableAt });
});

test("reads a bounded number of jobs and says when a count is capped", async () => {
  const { enqueue, depth } = setup();
  for (let i = 0; i < 101; i++) await enqueue();
  expect(await depth()).toMatchObject({ pending: 100, capped: true });
});

test("refuses a wrong worker token", async () => {
  const { t } = setup();
  await expect(t.query(api.worker.queueDepth, { workerToken: "nope", now: Date.now() })).rejects.toThrow(
    /worker token refused/,
  );
});
