// A job's live logs: lines sent with heartbeats, kept as a bounded tail, read by the job's owner.
import { expect, test, vi } from "vitest";
import { LEASE, TOKEN, useFakeClockAndWorkerToken, workerQueue } from "../component-test-setup";
import { api } from "./_generated/api";
import rules from "./rules.json";

useFakeClockAndWorkerToken();
const { maxLogLines, maxLogBytes, maxLogLineLength } = rules.limits;

async function running() {
  const { t, claim } = workerQueue();
  await t.mutation(api.jobs.enqueue, { repositoryUrl: "https://github.com/acme/widgets", prompt: "p", userId: "alice" });
  const claimed = (await claim())!;
  const lease = { workerToken: TOKEN, jobId: claimed.job._id, leaseToken: claimed.leaseToken, leaseMs: LEASE };
  const beat = (logs: { level: "info" | "error"; text: string }[]) => t.mutation(api.worker.heartbeat, { ...lease, logs });
  const tail = (userId?: string) => t.query(api.logs.byJob, { jobId: lease.jobId, userId });
  return { t, lease, beat, tail };
}

const lines = (from: number, count: number) => Array.from({ length: count }, (_, i) => ({ level: "info" as const, text: `line ${from + i}` }));

test("heartbeats append to the tail, oldest first; only the job's owner reads it", async () => {
  const { beat, tail } = await running();
  expect(await tail()).toEqual([]);
  await beat([{ level: "info", text: "[1/6] Extract: reading" }]);
  await beat([{ level: "error", text: "it failed" }, { level: "info", text: "[2/6] Analyze" }]);
  expect(await tail("alice")).toEqual([
    { level: "info", text: "[1/6] Extract: reading" },
    { level: "error", text: "it failed" },
    { level: "info", text: "[2/6] Analyze" },
  ]);
  expect(await tail("bob")).toEqual([]);
});

test("the tail keeps the last maxLogLines lines", async () => {
  const { beat, tail } = await running();
  await beat(lines(0, maxLogLines));
  await beat(lines(maxLogLines, 10));
  const kept = await tail();
  expect(kept).toHaveLength(maxLogLines);
  expect(kept[0].text).toBe("line 10");
  expect(kept.at(-1)!.text).toBe(`line ${maxLogLines + 9}`);
});

test("the tail keeps at most maxLogBytes bytes", async () => {
  const { t, beat, tail } = await running();
  const long = (i: number) => ({ level: "info" as const, text: `${i}`.padEnd(maxLogLineLength, "é") }); // ~2 bytes a character
  const perCall = Math.floor(maxLogBytes / (2 * maxLogLineLength));
  for (let call = 0; call < 3; call++) await beat(Array.from({ length: perCall }, (_, i) => long(call * perCall + i)));
  const kept = await tail();
  const bytes = kept.reduce((total, line) => total + new TextEncoder().encode(line.text).length, 0);
  expect(bytes).toBeLessThanOrEqual(maxLogBytes);
  expect(kept.length).toBeLessThan(3 * perCall);
  expect(kept.at(-1)!.text.startsWith(`${3 * perCall - 1}`)).toBe(true); // the newest stay
  const stored = await t.run((ctx) => ctx.db.query("logs").collect());
  expect(stored).toHaveLength(1); // one tail per job
});

test("an oversized batch or line is refused before anything is written, and the lease is not renewed", async () => {
  const { t, lease, beat, tail } = await running();
  const before = (await t.query(api.jobs.get, { jobId: lease.jobId }))!.leaseExpiresAt;
  vi.advanceTimersByTime(1_000); // a renewal would move the expiry
  await expect(beat(lines(0, maxLogLines + 1))).rejects.toThrow(/at most 200 log lines per call/);
  await expect(beat([{ level: "info", text: "x".repeat(maxLogLineLength + 1) }])).rejects.toMatchObject({ data: { code: "invalid_argument" } });
  expect(await tail()).toEqual([]);
  expect((await t.query(api.jobs.get, { jobId: lease.jobId }))!.leaseExpiresAt).toBe(before);
});

test("the attempt's last call carries the lines no heartbeat did, and a refused batch ends nothing", async () => {
  const { t, lease, beat, tail } = await running();
  const { leaseMs: _leaseMs, ...leased } = lease;
  await beat(lines(0, 2));
  const tooLong = [{ level: "error" as const, text: "x".repeat(maxLogLineLength + 1) }];
  await expect(
    t.mutation(api.worker.fail, { ...leased, error: "boom", errorKind: "cli_failed", retryable: false, logs: tooLong }),
  ).rejects.toThrow(/invalid_argument/);
  expect((await t.query(api.jobs.get, { jobId: lease.jobId }))!.status).not.toBe("failed");
  const lastWords = [{ level: "error" as const, text: "error: the model's answer was unusable" }];
  await t.mutation(api.worker.fail, { ...leased, error: "boom", errorKind: "cli_failed", retryable: false, logs: lastWords });
  expect(await tail()).toEqual([...lines(0, 2), ...lastWords]);
});
