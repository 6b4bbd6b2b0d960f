// A job's Claude usage: each attempt reports its running total; the job sums its attempts.
import { expect, test } from "vitest";
import { LEASE, TOKEN, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";

useFakeClockAndWorkerToken();
const used = (inputTokens: number, requests: number) => ({
  inputTokens,
  outputTokens: inputTokens / 10,
  cacheReadTokens: 2 * inputTokens,
  cacheCreationTokens: 0,
  requests,
});

async function claimed() {
  const { t, enqueue, claim } = workerQueue();
  const jobId = await enqueue();
  const next = async () => {
    const c = (await claim())!;
    return { workerToken: TOKEN, jobId: c.job._id, leaseToken: c.leaseToken };
  };
  const usage = async () => (await t.query(api.jobs.get, { jobId }))!.usage;
  return { t, jobId, next, usage };
}

test("an attempt's running totals replace each other; the job adds up its attempts", async () => {
  const { t, next, usage } = await claimed();
  const first = await next();
  await t.mutation(api.worker.heartbeat, { ...first, leaseMs: LEASE, usage: used(100, 1) });
  await t.mutation(api.worker.heartbeat, { ...first, leaseMs: LEASE, usage: used(300, 3) });
  await t.mutation(api.worker.heartbeat, { ...first, leaseMs: LEASE, usage: used(300, 3) }); // repeated: nothing more
  expect(await usage()).toEqual(used(300, 3));
  await t.mutation(api.worker.release, { ...first, reason: "host problem", hostFailureKind: "claude_auth", usage: used(400, 4) });
  const second = await next();
  await t.mutation(api.worker.heartbeat, { ...second, leaseMs: LEASE, usage: used(50, 1) });
  await t.mutation(api.worker.complete, { ...second, usage: used(60, 2) });
  const job = await t.query(api.jobs.get, { jobId: second.jobId });
  expect(job!.usage).toEqual(used(460, 6));
  expect(job).not.toHaveProperty("attemptUsage");
});

test("a job that never used Claude has no usage; a negative or fractional count is refused", async () => {
  const { t, next, usage } = await claimed();
  const lease = await next();
  await t.mutation(api.worker.release, { ...lease, reason: "agent stopping" });
  expect(await usage()).toBeUndefined();
  const again = await next();
  for (const bad of [{ ...used(10, 1), requests: -1 }, { ...used(10, 1), inputTokens: 1.5 }]) {
    await expect(t.mutation(api.worker.heartbeat, { ...again, leaseMs: LEASE, usage: bad })).rejects.toThrow(/usage\./);
  }
  expect(await usage()).toBeUndefined();
});
