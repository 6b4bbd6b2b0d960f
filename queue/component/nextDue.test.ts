// worker:nextDue: what idle agents subscribe to, to claim the moment something is due.
import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";

useFakeClockAndWorkerToken();

function setup() {
  const { t, enqueue, claim, backingOff } = workerQueue();
  const nextDue = (workerToken = TOKEN) => t.query(api.worker.nextDue, { workerToken });
  return { t, enqueue, claim, backingOff, nextDue };
}

test("an empty queue has nothing to wait for", async () => {
  const { nextDue } = setup();
  expect(await nextDue()).toEqual({ pendingAvailableAt: null, leaseExpiresAt: null });
});

test("the earliest pending job and the earliest lease expiry", async () => {
  const { t, enqueue, claim, nextDue } = setup();
  const first = Date.now();
  await enqueue();
  vi.advanceTimersByTime(1_000);
  await enqueue();
  expect(await nextDue()).toEqual({ pendingAvailableAt: first, leaseExpiresAt: null });
  const claimed = (await claim())!;
  expect(await nextDue()).toEqual({ pendingAvailableAt: first + 1_000, leaseExpiresAt: Date.now() + LEASE });
  await claim();
  const beatAt = Date.now();
  vi.advanceTimersByTime(5_000);
  // A heartbeat moves its lease past the other one's: the earliest expiry is the other job's.
  await t.mutation(api.worker.heartbeat, { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken, leaseMs: LEASE });
  expect(await nextDue()).toEqual({ pendingAvailableAt: null, leaseExpiresAt: beatAt + LEASE });
});

test("a job backing off gives the moment its backoff ends", async () => {
  const { backingOff, nextDue } = setup();
  const availableAt = await backingOff();
  expect(await nextDue()).toEqual({ pendingAvailableAt: availableAt, leaseExpiresAt: null });
});

test("finished jobs are not waited for", async () => {
  const { t, enqueue, claim, nextDue } = setup();
  await enqueue();
  const claimed = (await claim())!;
  await t.mutation(api.worker.complete, { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken });
  expect(await nextDue()).toEqual({ pendingAvailableAt: null, leaseExpiresAt: null });
});

test("only with the worker token", async () => {
  const { nextDue } = setup();
  await expect(nextDue("wrong")).rejects.toThrow(/unauthorized/);
  delete process.env.FONDATION_WORKER_TOKEN;
  await expect(nextDue(TOKEN)).rejects.toThrow(/unauthorized/);
});
