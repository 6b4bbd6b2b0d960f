import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";

useFakeClockAndWorkerToken();

function setup() {
  const { t, enqueue, claim, backingOff } = workerQueue();
  const depth = (now = Date.now()) => t.query(api.worker.queueDepth, { workerToken: TOKEN, now });
  return { t, enqueue, claim, backingOff, depth };
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
  const { t, backingOff, depth } = setup();
  const availableAt = await backingOff();
  // The caller's clock decides what is due.
  expect(await depth(availableAt - 1)).toMatchObject({ pending: 0, active: 0 });
  expect(await depth(availableAt)).toMatchObject({ pending: 1, oldestPendingAvailableAt: availableAt });
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
