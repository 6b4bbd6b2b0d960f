// worker:nextDue: what idle agents subscribe to, to claim the moment something is due.
import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, recordAccesses, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";

useFakeClockAndWorkerToken();

function setup() {
  const { t, enqueue, claim, backingOff } = workerQueue();
  const nextDue = (workerToken = TOKEN) => t.query(api.worker.nextDue, { workerToken });
  return { t, enqueue, claim, backingOff, nextDue };
}

test("an empty queue has nothing to wait for", async () => {
  const { nextDue } = setup();
  expect(await nextDue()).toEqual({ pendingAvailableAt: null });
});

test("the earliest pending job, in whichever shard", async () => {
  const { enqueue, claim, nextDue } = setup();
  const first = Date.now();
  for (let i = 0; i < 8; i++) await enqueue();
  vi.advanceTimersByTime(1_000);
  await enqueue();
  expect(await nextDue()).toEqual({ pendingAvailableAt: first });
  for (let i = 0; i < 8; i++) await claim();
  // Claims take the oldest of a shard, not of the queue: the later job may be gone already.
  expect([{ pendingAvailableAt: first }, { pendingAvailableAt: first + 1_000 }, { pendingAvailableAt: null }]).toContainEqual(await nextDue());
});

test("a heartbeat changes neither its answer nor what it reads", async () => {
  const { t, enqueue, claim, nextDue } = setup();
  await enqueue();
  await enqueue();
  const claimed = (await claim())!;
  const before = await recordAccesses(nextDue);
  vi.advanceTimersByTime(5_000);
  const beat = await recordAccesses(() =>
    t.mutation(api.worker.heartbeat, {
      workerToken: TOKEN,
      jobId: claimed.job._id,
      leaseToken: claimed.leaseToken,
      leaseMs: LEASE,
      status: "analyzing",
      progress: "step 2",
    }),
  );
  expect(beat.value).toMatchObject({ ok: true });
  const after = await recordAccesses(nextDue);
  expect(after.value).toEqual(before.value);
  expect(after.ranges).toEqual(before.ranges);
  // What it reads: the pending jobs of each shard, nothing of the running ones.
  expect(before.ranges).toEqual([0, 1, 2, 3].map((shard) => `jobs.by_shard_status_availableAt shard=${shard} status="pending"`));
  expect(beat.writes).toContain(claimed.job._id);
});

test("an expired lease is reaped by the scheduler: the job is pending again, due at once", async () => {
  const { t, enqueue, claim, nextDue } = setup();
  const jobId = await enqueue();
  await claim();
  expect(await nextDue()).toEqual({ pendingAvailableAt: null });
  vi.advanceTimersByTime(LEASE + 1);
  await t.finishAllScheduledFunctions(vi.runAllTimers);
  const job = await t.query(api.jobs.get, { jobId });
  expect(job).toMatchObject({ status: "pending", attempts: 1, leaseExpiries: 1 });
  expect(await nextDue()).toEqual({ pendingAvailableAt: job!.availableAt });
  expect(job!.availableAt).toBeLessThanOrEqual(Date.now());
});

test("a heartbeat keeps the lease from its reaper, which runs again at the lease's new end", async () => {
  const { t, enqueue, claim } = setup();
  const jobId = await enqueue();
  const claimed = (await claim())!;
  const beat = () =>
    t.mutation(api.worker.heartbeat, { workerToken: TOKEN, jobId, leaseToken: claimed.leaseToken, leaseMs: LEASE });
  for (let i = 0; i < 5; i++) {
    vi.advanceTimersByTime(LEASE / 2);
    await beat();
    await t.finishInProgressScheduledFunctions();
  }
  const running = await t.query(api.jobs.get, { jobId });
  expect(running?.status).toBe("running");
  expect(running).not.toHaveProperty("leaseExpiries");
  vi.advanceTimersByTime(LEASE + 1);
  await t.finishAllScheduledFunctions(vi.runAllTimers);
  expect(await t.query(api.jobs.get, { jobId })).toMatchObject({ status: "pending", leaseExpiries: 1 });
});

test("a job backing off gives the moment its backoff ends", async () => {
  const { backingOff, nextDue } = setup();
  const availableAt = await backingOff();
  expect(await nextDue()).toEqual({ pendingAvailableAt: availableAt });
});

test("finished jobs are not waited for", async () => {
  const { t, enqueue, claim, nextDue } = setup();
  await enqueue();
  const claimed = (await claim())!;
  await t.mutation(api.worker.complete, { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken });
  expect(await nextDue()).toEqual({ pendingAvailableAt: null });
});

test("only with the worker token", async () => {
  const { nextDue } = setup();
  await expect(nextDue("wrong")).rejects.toThrow(/unauthorized/);
  delete process.env.FONDATION_WORKER_TOKEN;
  await expect(nextDue(TOKEN)).rejects.toThrow(/unauthorized/);
});
