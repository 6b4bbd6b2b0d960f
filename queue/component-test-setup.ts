// The setup the worker queries' tests share (nextDue, queueDepth): a fresh component in convex-test
// under a fake clock, the worker token set, and a job to enqueue and claim. Outside component/, so
// it is no module of the component.
import { convexTest } from "convex-test";
import { afterEach, beforeEach, vi } from "vitest";
import { api } from "./component/_generated/api";
import schema from "./component/schema";

const modules = import.meta.glob(["./component/**/*.*s", "!./component/**/*.test.ts"]);
export const TOKEN = "test-worker-token";
export const LEASE = 30_000;

/** Registers, for the calling test file, a fake clock and the worker token around every test. */
export function useFakeClockAndWorkerToken(): void {
  beforeEach(() => {
    vi.useFakeTimers();
    process.env.FONDATION_WORKER_TOKEN = TOKEN;
  });
  afterEach(() => vi.useRealTimers());
}

export function workerQueue() {
  const t = convexTest(schema, modules);
  const enqueue = () => t.mutation(api.jobs.enqueue, { repositoryUrl: "https://github.com/acme/widgets", prompt: "p" });
  const claim = () => t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: LEASE });
  /** Queues a job, claims it and fails it retryably: the job backs off until the returned time. */
  const backingOff = async (): Promise<number> => {
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
    return failed.availableAt;
  };
  return { t, enqueue, claim, backingOff };
}
