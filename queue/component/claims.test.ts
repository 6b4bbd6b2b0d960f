// Claims spread over the shards: two claims made at once, when due jobs wait in more than one
// shard, read and write different parts of the queue, so Convex runs both (neither wrote into
// what the other read).
import { afterEach, expect, test, vi } from "vitest";
import { LEASE, TOKEN, recordAccesses, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";
import { SHARDS } from "./lib";

useFakeClockAndWorkerToken();
afterEach(() => vi.restoreAllMocks());

/** Math.random's next answers: they pick the shard of an enqueue and the first shard of a claim. */
function nextShards(...shards: number[]) {
  const random = vi.spyOn(Math, "random");
  for (const shard of shards) random.mockReturnValueOnce((shard + 0.5) / SHARDS);
}

test("two claims starting at different shards, each with a due job, touch nothing the other reads", async () => {
  const { t, enqueue } = workerQueue();
  nextShards(0, 1);
  const [a, b] = [await enqueue(), await enqueue()];
  const claim = (workerId: string) => t.mutation(api.worker.claim, { workerToken: TOKEN, workerId, leaseMs: LEASE });
  nextShards(0);
  const first = await recordAccesses(() => claim("w1"));
  nextShards(1);
  const second = await recordAccesses(() => claim("w2"));
  expect(first.value?.job._id).toBe(a);
  expect(second.value?.job._id).toBe(b);
  // Each read its own shard's pending jobs and counters only.
  expect(first.ranges.some((range) => range.includes("shard=1") || range.includes('"shard:1"'))).toBe(false);
  expect(second.ranges.some((range) => range.includes("shard=0") || range.includes('"shard:0"'))).toBe(false);
  expect(first.ranges.filter((range) => second.ranges.includes(range))).toEqual([]);
  // What each wrote (its job, its shard's counters, its reaper) is nothing the other read or wrote.
  expect(first.writes.filter((id) => second.writes.includes(id))).toEqual([]);
  const counters = await t.run(async (ctx) => await ctx.db.query("counters").collect());
  const scopeOf = (id: string) => counters.find((counter) => counter._id === id)?.scope;
  expect(new Set(first.writes.map(scopeOf).filter(Boolean))).toEqual(new Set(["shard:0"]));
  expect(new Set(second.writes.map(scopeOf).filter(Boolean))).toEqual(new Set(["shard:1"]));
});

test("a claim whose first shard is empty walks on to the others", async () => {
  const { t, enqueue } = workerQueue();
  nextShards(3);
  const jobId = await enqueue();
  nextShards(0);
  const claimed = await recordAccesses(() => t.mutation(api.worker.claim, { workerToken: TOKEN, workerId: "w1", leaseMs: LEASE }));
  expect(claimed.value?.job._id).toBe(jobId);
  const shardsRead = claimed.ranges.filter((range) => range.startsWith("jobs.by_shard_status_availableAt")).map((range) => range.split(" ")[1]);
  expect(shardsRead).toEqual(["shard=0", "shard=1", "shard=2", "shard=3"]);
});
