import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";

useFakeClockAndWorkerToken();

function setup() {
  const { t, enqueue, claim, backingOff } = workerQueue();
  const depth = () => t.query(api.worker.queueDepth, { workerToken: TOKEN });
  return { t, enqueue, claim, backingOff, depth };
}

test("an empty queue", async () => {
  const { depth } = setup();
  expect(await depth()).toEqual({ pending: 0, oldestPendingAvailableAt: null, active: 0, capped: false });
});

test("counts due pending and active jobs, and gives when the longest-waiting job became due", async () => {
  const { enqueue, claim, depth } = setup();
  await enqueue();
  await claim();
  vi.advanceTimersByTime(1_000);
  const firstDue = Date.now();
  await enqueue();
  vi.advanceTimersByTime(1_000);
  await enqueue();
  expect(await depth()).toEqual({
    pending: 2,
    oldestPendingAvailableAt: firstDue,
    active: 1,
    capped: false,
  });
});

test("a job backing off before a retry is pending, available from the end of its backoff", async () => {
  const { backingOff, depth } = setup();
  const availableAt = await backingOff();
  // The agent compares with its own clock: the job is due once availableAt has passed.
  expect(await depth()).toEqual({ pending: 1, oldestPendingAvailableAt: availableAt, active: 0, capped: false });
});

test("counts exactly, however many jobs wait, from the counters alone", async () => {
  const { t, enqueue, depth } = setup();
  for (let i = 0; i < 150; i++) await enqueue();
  expect(await depth()).toMatchObject({ pending: 150, capped: false });
  // The answer comes from the counters, whatever the jobs say (no job is read to count it).
  await t.run(async (ctx) => {
    for (const counter of await ctx.db.query("counters").collect()) await ctx.db.patch(counter._id, { count: 1_000_000 });
  });
  expect(await depth()).toMatchObject({ pending: 4_000_000 });
});

test("refuses a wrong worker token", async () => {
  const { t } = setup();
  await expect(t.query(api.worker.queueDepth, { workerToken: "nope" })).rejects.toThrow(
    /worker token refused/,
  );
});
