import { convexTest } from "convex-test";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api } from "./_generated/api";
import { DOC_KINDS, type DocKind } from "./lib";
import schema from "./schema";

const modules = import.meta.glob("./**/*.*s");
const TOKEN = "test-worker-token";
const LEASE = 30_000;
const REPO = "https://github.com/acme/widgets";
const FIRST_PAGE = { numItems: 50, cursor: null };

// worker:fail's answer when the caller holds the lease, as these tests do: lease_lost would be a bug.
function held<T extends object>(answer: T | { readonly ok: false; readonly reason: "lease_lost" }): T {
  if ("reason" in answer) throw new Error(`unexpected ${answer.reason}`);
  return answer;
}

beforeEach(() => {
  vi.useFakeTimers();
  process.env.FONDATION_WORKER_TOKEN = TOKEN;
  delete process.env.FONDATION_ACCEPT_ANY_REPOSITORY_URL;
});
afterEach(() => vi.useRealTimers());

function setup() {
  const t = convexTest(schema, modules);
  const enqueue = (extra: Record<string, unknown> = {}) =>
    t.mutation(api.jobs.enqueue, { repositoryUrl: REPO, prompt: "make a course", ...extra });
  const claim = (workerId = "w1", leaseMs = LEASE) =>
    t.mutation(api.worker.claim, { workerToken: TOKEN, workerId, leaseMs });
  const job = (jobId: string) => t.query(api.jobs.get, { jobId });
  const settle = () => t.finishAllScheduledFunctions(vi.runAllTimers);
  /** Time passes beyond the lease: its reaper (scheduled by the claim) runs. */
  const expireLease = async () => {
    vi.advanceTimersByTime(LEASE + 1);
    await t.finishInProgressScheduledFunctions();
  };
  /** The first page of jobs:list, and of a job's docs: what a UI shows first. */
  const list = async (args: Record<string, unknown> = {}) => (await t.query(api.jobs.list, { paginationOpts: FIRST_PAGE, ...args })).page;
  const docs = async (jobId: string, userId?: string) => (await t.query(api.docs.byJob, { jobId, userId, paginationOpts: FIRST_PAGE })).page;
  return { t, enqueue, claim, job, settle, expireLease, list, docs };
}

const someDoc = (slug: string, chapterIndex = 1) => ({
  title: `Title ${slug}`,
  slug,
  kind: "chapter" as DocKind,
  chapterIndex,
  content: `# ${slug}\n`,
});

describe("enqueue", () => {
  test("creates a pending job with the queue's defaults", async () => {
    const { enqueue, job } = setup();
    const id = await enqueue({ branch: "main" });
    const stored = await job(id);
    expect(stored).toMatchObject({ status: "pending", attempts: 0, maxAttempts: 3, branch: "main" });
    expect(stored).not.toHaveProperty("leaseToken");
  });

  test.each([
    [{ repositoryUrl: "http://github.com/a/b" }, /https URL/],
    [{ repositoryUrl: "file:///etc" }, /https URL/],
    [{ repositoryUrl: "not a url" }, /not a URL/],
    [{ repositoryUrl: "https://user:pw@github.com/a/b" }, /credentials/],
    [{ prompt: "x".repeat(20_001) }, /prompt is too long/],
    [{ branch: "--upload-pack=evil" }, /not a valid branch/],
    [{ branch: "a..b" }, /not a valid branch/],
    [{ maxAttempts: 0 }, /maxAttempts must be a whole number/],
  ])("refuses bad input %j with a clear ConvexError", async (extra, message) => {
    const { enqueue } = setup();
    await expect(enqueue(extra)).rejects.toThrow(message);
  });

  test("a deployment for demos and tests may accept any URL (the agent checks them itself)", async () => {
    process.env.FONDATION_ACCEPT_ANY_REPOSITORY_URL = "1";
    const { enqueue, job } = setup();
    expect(await job(await enqueue({ repositoryUrl: "file:///etc" }))).toMatchObject({ status: "pending" });
    expect(await job(await enqueue({ branch: "--upload-pack=x" }))).toMatchObject({ status: "pending" });
  });

  test("a dedupKey gives the unfinished job that has it instead of a new one", async () => {
    const { enqueue, claim, t } = setup();
    const first = await enqueue({ dedupKey: "repo-1" });
    expect(await enqueue({ dedupKey: "repo-1" })).toBe(first);
    await claim(); // active jobs count too
    expect(await enqueue({ dedupKey: "repo-1" })).toBe(first);
    expect(await enqueue({ dedupKey: "repo-2" })).not.toBe(first);
    await t.mutation(api.jobs.cancel, { jobId: first });
    const claimed = await t.query(api.jobs.get, { jobId: first });
    expect(claimed?.cancelRequested).toBe(true);
  });

  test("a finished job's dedupKey is free again", async () => {
    const { enqueue, t } = setup();
    const first = await enqueue({ dedupKey: "k" });
    await t.mutation(api.jobs.cancel, { jobId: first });
    expect(await enqueue({ dedupKey: "k" })).not.toBe(first);
  });
});

describe("worker token", () => {
  const calls = (t: ReturnType<typeof setup>["t"], workerToken: string | undefined, jobId: string) => ({
    claim: () => t.mutation(api.worker.claim, { workerToken: workerToken as string, workerId: "w", leaseMs: LEASE }),
    heartbeat: () => t.mutation(api.worker.heartbeat, { workerToken: workerToken as string, jobId, leaseToken: "x", leaseMs: LEASE }),
    saveDocs: () => t.mutation(api.worker.saveDocs, { workerToken: workerToken as string, jobId, leaseToken: "x", docs: [] }),
    complete: () => t.mutation(api.worker.complete, { workerToken: workerToken as string, jobId, leaseToken: "x" }),
    fail: () =>
      t.mutation(api.worker.fail, { workerToken: workerToken as string, jobId, leaseToken: "x", error: "e", errorKind: "crashed", retryable: true }),
    release: () => t.mutation(api.worker.release, { workerToken: workerToken as string, jobId, leaseToken: "x", reason: "r" }),
    canceled: () => t.mutation(api.worker.canceled, { workerToken: workerToken as string, jobId, leaseToken: "x" }),
  });

  for (const name of ["claim", "heartbeat", "saveDocs", "complete", "fail", "release", "canceled"] as const) {
    test(`${name} refuses a wrong token, an empty token, and every call when the deployment has none`, async () => {
      const { t, enqueue, job } = setup();
      const jobId = await enqueue();
      await expect(calls(t, "wrong-token", jobId)[name]()).rejects.toThrow(/worker token refused/);
      await expect(calls(t, "", jobId)[name]()).rejects.toThrow(/worker token refused/);
      await expect(calls(t, TOKEN.slice(0, -1), jobId)[name]()).rejects.toThrow(/worker token refused/);
      delete process.env.FONDATION_WORKER_TOKEN;
      await expect(calls(t, TOKEN, jobId)[name]()).rejects.toThrow(/worker token refused/);
      await expect(calls(t, "", jobId)[name]()).rejects.toThrow(/worker token refused/);
      expect(await job(jobId)).toMatchObject({ status: "pending", attempts: 0 });
    });
  }

  test("the refusal is a ConvexError with a code", async () => {
    const { t } = setup();
    const error = await t
      .mutation(api.worker.claim, { workerToken: "nope", workerId: "w", leaseMs: LEASE })
      .catch((e) => e);
    expect(error.data).toMatchObject({ code: "unauthorized" });
  });
});

describe("claim", () => {
  test("takes each due job once, whatever its shard", async () => {
    const { enqueue, claim, job } = setup();
    const queued = [];
    for (let i = 0; i < 8; i++) queued.push(await enqueue());
    const claims = [];
    for (let i = 0; i < 8; i++) claims.push((await claim(`w${i}`))!);
    expect(claims.map((c) => c.job._id).sort()).toEqual([...queued].sort());
    expect(new Set(claims.map((c) => c.leaseToken)).size).toBe(8);
    expect(claims[0].attempt).toBe(1);
    expect(await claim("late")).toBeNull();
    expect(await job(claims[0].job._id)).toMatchObject({ status: "running", leaseOwner: "w0", attempts: 1 });
  });

  test("within a shard, the oldest due job first", async () => {
    const { enqueue, claim } = setup();
    vi.spyOn(Math, "random").mockReturnValue(0); // every job in shard 0, every claim starting there
    try {
      const first = await enqueue();
      vi.advanceTimersByTime(10);
      const second = await enqueue();
      expect((await claim("a"))?.job._id).toBe(first);
      expect((await claim("b"))?.job._id).toBe(second);
    } finally {
      vi.mocked(Math.random).mockRestore();
    }
  });

  test("validates its arguments", async () => {
    const { claim } = setup();
    await expect(claim("", LEASE)).rejects.toThrow(/workerId must not be empty/);
    await expect(claim("w", 10)).rejects.toThrow(/leaseMs must be a whole number/);
  });

  test("a job waiting for its backoff is not claimed before it is due", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    const failed = held(await t.mutation(api.worker.fail, {
      workerToken: TOKEN, jobId, leaseToken: c.leaseToken, error: "boom", errorKind: "crashed", retryable: true,
    }));
    expect(failed.willRetry).toBe(true);
    const wait = failed.availableAt! - Date.now();
    expect(wait).toBeGreaterThanOrEqual(0);
    expect(wait).toBeLessThan(5_000); // first retry: full jitter within the 5 s base
    if (wait > 0) expect(await claim()).toBeNull();
    vi.advanceTimersByTime(wait);
    expect((await claim())?.attempt).toBe(2);
  });

  test("a stalled job (lease expired) is claimed again with a new token, and the attempt counts", async () => {
    const { enqueue, claim, job, expireLease } = setup();
    const jobId = await enqueue();
    const first = (await claim("a"))!;
    expect(await claim("b")).toBeNull(); // lease still valid
    await expireLease();
    expect(await job(jobId)).toMatchObject({ status: "pending", leaseExpiries: 1, progress: "Queued again: the lease of a expired" });
    const second = (await claim("b"))!;
    expect(second.job._id).toBe(jobId);
    expect(second.attempt).toBe(2);
    expect(second.leaseToken).not.toBe(first.leaseToken);
    expect(await job(jobId)).toMatchObject({ leaseOwner: "b", leaseExpiries: 1 });
  });

  test("a job whose lease expired maxAttempts times is failed, saying so", async () => {
    const { enqueue, claim, job, expireLease } = setup();
    const jobId = await enqueue({ maxAttempts: 2 });
    await claim("a");
    await expireLease();
    await claim("b");
    await expireLease();
    expect(await claim("c")).toBeNull();
    const failed = await job(jobId);
    expect(failed).toMatchObject({ status: "failed", errorKind: "lease_expired" });
    expect(failed?.error).toMatch(/lease expired 2 time\(s\).*gave up after 2 of 2 attempts/);
  });

  test("a stalled job with a cancel request is canceled rather than claimed", async () => {
    const { enqueue, claim, job, t, expireLease } = setup();
    const jobId = await enqueue();
    await claim("a");
    await t.mutation(api.jobs.cancel, { jobId });
    await expireLease();
    expect(await claim("b")).toBeNull();
    expect(await job(jobId)).toMatchObject({ status: "canceled" });
  });
});

describe("heartbeat", () => {
  test("extends the lease and records status and progress", async () => {
    const { enqueue, claim, job, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    vi.advanceTimersByTime(LEASE - 1_000);
    const beat = await t.mutation(api.worker.heartbeat, {
      workerToken: TOKEN, jobId, leaseToken: c.leaseToken, leaseMs: LEASE,
      status: "analyzing", progress: "Step 2/6: Analyzing relationships", currentStep: 2, totalSteps: 6,
    });
    expect(beat).toEqual({ ok: true, cancelRequested: false });
    vi.advanceTimersByTime(LEASE - 1_000); // past the first lease, within the renewed one
    await t.finishInProgressScheduledFunctions(); // the first lease's reaper finds it extended
    expect(await claim("other")).toBeNull();
    expect(await job(jobId)).toMatchObject({ status: "analyzing", currentStep: 2, totalSteps: 6, progress: "Step 2/6: Analyzing relationships" });
  });

  test("returns cancelRequested once the job is canceled", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    expect(await t.mutation(api.jobs.cancel, { jobId })).toEqual({ status: "cancel_requested" });
    const beat = await t.mutation(api.worker.heartbeat, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, leaseMs: LEASE });
    expect(beat).toEqual({ ok: true, cancelRequested: true });
  });

  test("an expired lease is lost even before anyone else claims the job", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    vi.advanceTimersByTime(LEASE + 1);
    const beat = await t.mutation(api.worker.heartbeat, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, leaseMs: LEASE });
    expect(beat).toEqual({ ok: false, reason: "lease_lost" });
  });

  test("an unknown job id is a clear error", async () => {
    const { t } = setup();
    await expect(
      t.mutation(api.worker.heartbeat, { workerToken: TOKEN, jobId: "nope", leaseToken: "x", leaseMs: LEASE }),
    ).rejects.toThrow(/nope.*is not a job id/);
  });
});

describe("a stale worker (its lease expired and another worker claimed the job)", () => {
  async function takenOver() {
    const s = setup();
    const jobId = await s.enqueue();
    const stale = (await s.claim("stale"))!;
    await s.t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: stale.leaseToken, docs: [someDoc("from-stale")] });
    await s.expireLease();
    const fresh = (await s.claim("fresh"))!;
    await s.t.mutation(api.worker.heartbeat, { workerToken: TOKEN, jobId, leaseToken: fresh.leaseToken, leaseMs: LEASE, status: "analyzing", progress: "fresh" });
    const before = await s.job(jobId);
    return { ...s, jobId, stale: stale.leaseToken, fresh: fresh.leaseToken, before };
  }
  const args = (jobId: string, leaseToken: string) => ({ workerToken: TOKEN, jobId, leaseToken });

  test("is refused on heartbeat, and nothing changes", async () => {
    const { t, jobId, stale, job, before } = await takenOver();
    expect(await t.mutation(api.worker.heartbeat, { ...args(jobId, stale), leaseMs: LEASE, status: "gathering", progress: "stale" })).toEqual({ ok: false, reason: "lease_lost" });
    expect(await job(jobId)).toEqual(before);
  });

  test("is refused on saveDocs, and its docs never show", async () => {
    const { t, jobId, stale, fresh, settle, docs } = await takenOver();
    expect(await t.mutation(api.worker.saveDocs, { ...args(jobId, stale), docs: [someDoc("late")] })).toEqual({ ok: false, reason: "lease_lost" });
    await t.mutation(api.worker.saveDocs, { ...args(jobId, fresh), docs: [someDoc("from-fresh")] });
    await t.mutation(api.worker.complete, args(jobId, fresh));
    await settle();
    expect((await docs(jobId)).map((d) => d.slug)).toEqual(["from-fresh"]);
    const stored = await t.run((ctx) => ctx.db.query("docs").collect());
    expect(stored.map((d) => d.slug)).toEqual(["from-fresh"]); // the stale attempt's staged docs are gone
  });

  test("is refused on complete, and the job stays the fresh worker's", async () => {
    const { t, jobId, stale, job, before } = await takenOver();
    expect(await t.mutation(api.worker.complete, args(jobId, stale))).toEqual({ ok: false, reason: "lease_lost" });
    expect(await job(jobId)).toEqual(before);
  });

  test("is refused on fail, release and canceled", async () => {
    const { t, jobId, stale, job, before } = await takenOver();
    expect(await t.mutation(api.worker.fail, { ...args(jobId, stale), error: "x", errorKind: "crashed", retryable: false })).toEqual({ ok: false, reason: "lease_lost" });
    expect(await t.mutation(api.worker.release, { ...args(jobId, stale), reason: "r" })).toEqual({ ok: false, reason: "lease_lost" });
    expect(await t.mutation(api.worker.canceled, args(jobId, stale))).toEqual({ ok: false, reason: "lease_lost" });
    expect(await job(jobId)).toEqual(before);
  });

  test("a repeated complete (its first answer lost) succeeds for the attempt that completed, and only for it", async () => {
    const { t, jobId, stale, fresh, job } = await takenOver();
    expect(await t.mutation(api.worker.complete, args(jobId, fresh))).toEqual({ ok: true });
    const completed = await job(jobId);
    expect(await t.mutation(api.worker.complete, args(jobId, fresh))).toEqual({ ok: true });
    expect(await t.mutation(api.worker.complete, args(jobId, stale))).toEqual({ ok: false, reason: "lease_lost" });
    expect(await job(jobId)).toEqual(completed);
  });

  test("a made-up token is refused too", async () => {
    const { t, jobId, job, before } = await takenOver();
    expect(await t.mutation(api.worker.complete, args(jobId, "1-deadbeef"))).toEqual({ ok: false, reason: "lease_lost" });
    expect(await job(jobId)).toEqual(before);
  });
});

describe("fail", () => {
  async function claimed(extra: Record<string, unknown> = {}) {
    const s = setup();
    const jobId = await s.enqueue(extra);
    const c = (await s.claim())!;
    const fail = (retryable: boolean, leaseToken = c.leaseToken) =>
      s.t.mutation(api.worker.fail, { workerToken: TOKEN, jobId, leaseToken, error: "the CLI crashed", errorKind: "crashed", retryable });
    return { ...s, jobId, c, fail };
  }

  test("retryable: back to pending after a backoff with full jitter (5 s base, doubling, 10 min cap)", async () => {
    const s = await claimed({ maxAttempts: 10 });
    const ceilings = [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000];
    let leaseToken = s.c.leaseToken;
    for (const ceiling of ceilings) {
      const result = held(await s.fail(true, leaseToken));
      expect(result.willRetry).toBe(true);
      const wait = result.availableAt! - Date.now();
      expect(wait).toBeGreaterThanOrEqual(0);
      expect(wait).toBeLessThan(ceiling);
      expect(await s.job(s.jobId)).toMatchObject({ status: "pending", error: "the CLI crashed", errorKind: "crashed" });
      vi.advanceTimersByTime(wait);
      leaseToken = (await s.claim())!.leaseToken;
    }
    const last = held(await s.fail(true, leaseToken));
    expect(last.willRetry).toBe(false);
    expect(await s.job(s.jobId)).toMatchObject({ status: "failed", attempts: 10 });
  });

  test("the jitter spreads retries out", async () => {
    const waits = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const s = await claimed();
      waits.add(held(await s.fail(true)).availableAt! - Date.now());
    }
    expect(waits.size).toBeGreaterThan(1);
  });

  test("permanent: failed at once with the error and its kind", async () => {
    const s = await claimed();
    expect(await s.fail(false)).toEqual({ ok: true, willRetry: false });
    expect(await s.job(s.jobId)).toMatchObject({ status: "failed", attempts: 1, error: "the CLI crashed", errorKind: "crashed" });
    expect(await s.claim()).toBeNull();
  });

  test("attempts used up: failed even if retryable", async () => {
    const s = await claimed({ maxAttempts: 1 });
    expect(await s.fail(true)).toEqual({ ok: true, willRetry: false });
    expect(await s.job(s.jobId)).toMatchObject({ status: "failed" });
  });

  test("refuses an errorKind that is not snake_case", async () => {
    const s = await claimed();
    await expect(
      s.t.mutation(api.worker.fail, { workerToken: TOKEN, jobId: s.jobId, leaseToken: s.c.leaseToken, error: "e", errorKind: "Bad Kind", retryable: true }),
    ).rejects.toThrow(/errorKind/);
  });

  test("a very long error is cut to fit", async () => {
    const s = await claimed();
    await s.t.mutation(api.worker.fail, { workerToken: TOKEN, jobId: s.jobId, leaseToken: s.c.leaseToken, error: "e".repeat(50_000), errorKind: "crashed", retryable: false });
    expect((await s.job(s.jobId))?.error?.length).toBe(4_000);
  });
});

describe("release", () => {
  test("puts the job back at once without counting the attempt", async () => {
    const { enqueue, claim, job, t } = setup();
    const jobId = await enqueue({ maxAttempts: 1 });
    const c = (await claim("a"))!;
    expect(await t.mutation(api.worker.release, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, reason: "agent stopping" })).toEqual({ ok: true });
    expect(await job(jobId)).toMatchObject({ status: "pending", attempts: 0 });
    const again = (await claim("b"))!;
    expect(again.attempt).toBe(1);
    expect(again.leaseToken).not.toBe(c.leaseToken);
  });

  test("a job released for host problems by MAX_HOST_RELEASES hosts fails: its own output may be the problem", async () => {
    const { enqueue, claim, job, t } = setup();
    const jobId = await enqueue({ maxAttempts: 1 });
    const release = async (worker: string) => {
      const c = (await claim(worker))!;
      const reason = `host problem on ${worker} (claude_auth): Invalid API key`;
      return t.mutation(api.worker.release, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, reason, hostFailureKind: "claude_auth" });
    };
    expect(await release("a")).toEqual({ ok: true });
    expect(await job(jobId)).toMatchObject({ status: "pending", attempts: 0, hostReleases: 1 });
    const stopping = (await claim("b"))!; // a release for stopping is nobody's fault: not counted
    await t.mutation(api.worker.release, { workerToken: TOKEN, jobId, leaseToken: stopping.leaseToken, reason: "agent b is stopping" });
    expect(await job(jobId)).toMatchObject({ status: "pending", hostReleases: 1 });
    expect(await release("c")).toEqual({ ok: true });
    expect(await release("d")).toEqual({ ok: true, failed: true });
    expect(await job(jobId)).toMatchObject({
      status: "failed",
      errorKind: "claude_auth",
      hostReleases: 3,
      error: "released 3 times for host problems, the last: host problem on d (claude_auth): Invalid API key",
    });
    expect(await claim("e")).toBeNull();
  });

  test("a host failure kind must be an error kind", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    await expect(
      t.mutation(api.worker.release, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, reason: "r", hostFailureKind: "Not A Kind" }),
    ).rejects.toThrow(/hostFailureKind .*Not A Kind.* must be snake_case/);
  });
});

describe("cancel", () => {
  test("a pending job is canceled at once and never claimed", async () => {
    const { enqueue, claim, job, t } = setup();
    const jobId = await enqueue();
    expect(await t.mutation(api.jobs.cancel, { jobId })).toEqual({ status: "canceled" });
    expect(await job(jobId)).toMatchObject({ status: "canceled" });
    expect(await claim()).toBeNull();
  });

  test("an active job gets a request that the worker acknowledges", async () => {
    const { enqueue, claim, job, t, settle } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    await t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, docs: [someDoc("partial")] });
    await t.mutation(api.jobs.cancel, { jobId });
    expect(await job(jobId)).toMatchObject({ status: "running", cancelRequested: true });
    expect(await t.mutation(api.worker.canceled, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken })).toEqual({ ok: true });
    await settle();
    expect(await job(jobId)).toMatchObject({ status: "canceled" });
    expect(await t.run((ctx) => ctx.db.query("docs").collect())).toEqual([]);
  });

  test("acknowledging a cancel nobody asked for is refused", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    await expect(t.mutation(api.worker.canceled, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken })).rejects.toThrow(/no cancel request/);
  });

  test("a finished job cannot be canceled; an unknown one is a clear error", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    await t.mutation(api.worker.complete, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken });
    await expect(t.mutation(api.jobs.cancel, { jobId })).rejects.toThrow(/already completed/);
    await expect(t.mutation(api.jobs.cancel, { jobId: "bogus" })).rejects.toThrow(/bogus.*is not a job id/);
  });

  test("a failing attempt of a job with a cancel request ends canceled, not retried", async () => {
    const { enqueue, claim, job, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    await t.mutation(api.jobs.cancel, { jobId });
    const result = held(await t.mutation(api.worker.fail, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, error: "killed", errorKind: "crashed", retryable: true }));
    expect(result.willRetry).toBe(false);
    expect(await job(jobId)).toMatchObject({ status: "canceled" });
  });
});

describe("docs", () => {
  test("are staged per attempt and become the job's only at complete; retries never show two sets", async () => {
    const { enqueue, claim, t, settle, docs } = setup();
    const jobId = await enqueue();
    const first = (await claim())!;
    await t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: first.leaseToken, docs: [someDoc("a", 1), someDoc("b", 2)] });
    expect(await docs(jobId)).toEqual([]); // staged, not visible
    const failed = held(await t.mutation(api.worker.fail, { workerToken: TOKEN, jobId, leaseToken: first.leaseToken, error: "x", errorKind: "crashed", retryable: true }));
    vi.advanceTimersByTime(failed.availableAt! - Date.now());
    await settle();
    const second = (await claim())!;
    await t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: second.leaseToken, docs: [someDoc("c", 2), someDoc("index", 0)] });
    await t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: second.leaseToken, docs: [someDoc("c", 2)] }); // a repeated chunk
    await t.mutation(api.worker.complete, { workerToken: TOKEN, jobId, leaseToken: second.leaseToken, summary: { docs: 2 } });
    await settle();
    const shown = await docs(jobId);
    expect(shown.map((d) => d.slug)).toEqual(["index", "c"]);
    expect(shown[0]).not.toHaveProperty("leaseToken");
    expect(await t.query(api.jobs.get, { jobId })).toMatchObject({ status: "completed", result: { docs: 2 } });
    expect(await t.run((ctx) => ctx.db.query("docs").collect())).toHaveLength(2);
  });

  test("an oversized document is a clear error, not a crash", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    const huge = { ...someDoc("huge"), content: "é".repeat(600_000) }; // 1.2 MB in UTF-8
    await expect(
      t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, docs: [huge] }),
    ).rejects.toThrow(/doc huge is 1200000 bytes; a document holds at most 1000000/);
  });

  test("bad slugs and too many docs per call are refused", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    const save = (docs: ReturnType<typeof someDoc>[]) =>
      t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, docs });
    await expect(save([someDoc("../etc/passwd")])).rejects.toThrow(/slug/);
    await expect(save(Array.from({ length: 101 }, (_, i) => someDoc(`d${i}`)))).rejects.toThrow(/at most 100 docs per call/);
  });

  test("a doc's kind is one the platform's docs table takes", async () => {
    const { enqueue, claim, t } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    // A string, as an untyped caller (the agent, over HTTP) sends it.
    const save = (kind: string) =>
      t.mutation(api.worker.saveDocs, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, docs: [{ ...someDoc(kind), kind: kind as DocKind }] });
    for (const kind of DOC_KINDS) expect(await save(kind)).toEqual({ ok: true, saved: 1 });
    await expect(save("script")).rejects.toThrow(/Expected one of[\s\S]*script/);
  });
});

describe("queries", () => {
  test("list filters by status, newest first, and stats counts per status", async () => {
    const { enqueue, claim, t, list } = setup();
    const ids = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await enqueue());
      vi.advanceTimersByTime(1);
    }
    const claimed = (await claim())!.job._id;
    const pending = await list({ status: "pending" });
    expect(pending.map((j) => j._id)).toEqual([...ids].reverse().filter((id) => id !== claimed));
    expect((await list({})).map((j) => j._id)).toEqual([...ids].reverse());
    expect((await list({ paginationOpts: { numItems: 1, cursor: null } })).length).toBe(1);
    const stats = await t.query(api.jobs.stats, {});
    expect(stats.counts).toMatchObject({ pending: 2, running: 1, completed: 0 });
    expect(stats.capped).toEqual([]);
  });

  test("retry puts a failed job back with fresh attempts", async () => {
    const { enqueue, claim, t, job } = setup();
    const jobId = await enqueue();
    const c = (await claim())!;
    await t.mutation(api.worker.fail, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, error: "x", errorKind: "invalid_output", retryable: false });
    expect(await t.mutation(api.jobs.retry, { jobId })).toEqual({ status: "pending" });
    expect(await job(jobId)).toMatchObject({ status: "pending", attempts: 0 });
    expect((await job(jobId))?.error).toBeUndefined();
    await expect(t.mutation(api.jobs.retry, { jobId })).rejects.toThrow(/only failed or canceled/);
  });

  test("get of an unknown or malformed id is null", async () => {
    const { t, docs } = setup();
    expect(await t.query(api.jobs.get, { jobId: "nope" })).toBeNull();
    expect(await docs("nope")).toEqual([]);
  });
});

describe("acting for a user (userId)", () => {
  test("a user's calls see and change only that user's jobs; the operator's see all", async () => {
    const { t, enqueue, claim, list, docs } = setup();
    const alices = await enqueue({ userId: "alice" });
    const bobs = await enqueue({ userId: "bob" });
    expect(await t.query(api.jobs.get, { jobId: bobs, userId: "alice" })).toBeNull();
    expect((await list({ userId: "alice" })).map((j) => j._id)).toEqual([alices]);
    expect((await list({ userId: "alice", status: "pending" })).map((j) => j._id)).toEqual([alices]);
    expect((await t.query(api.jobs.stats, { userId: "bob" })).counts.pending).toBe(1);
    await expect(t.mutation(api.jobs.cancel, { jobId: bobs, userId: "alice" })).rejects.toThrow(/does not exist/);
    await expect(t.mutation(api.jobs.retry, { jobId: bobs, userId: "alice" })).rejects.toThrow(/does not exist/);
    expect((await list({})).length).toBe(2);
    const c = (await claim())!;
    await t.mutation(api.worker.complete, { workerToken: TOKEN, jobId: c.job._id, leaseToken: c.leaseToken });
    expect(await docs(alices, "bob")).toEqual([]);
  });

  test("users retry failures a retry may cure, the operator any failed or canceled job", async () => {
    const { t, enqueue, claim } = setup();
    const failWith = async (retryable: boolean) => {
      const jobId = await enqueue({ userId: "alice", maxAttempts: 1 });
      const c = (await claim())!;
      await t.mutation(api.worker.fail, { workerToken: TOKEN, jobId, leaseToken: c.leaseToken, error: "x", errorKind: "crashed", retryable });
      return jobId;
    };
    const permanent = await failWith(false);
    await expect(t.mutation(api.jobs.retry, { jobId: permanent, userId: "alice" })).rejects.toThrow(/a retry may cure/);
    expect(await t.mutation(api.jobs.retry, { jobId: permanent })).toEqual({ status: "pending" });
    await t.mutation(api.jobs.cancel, { jobId: permanent });
    const transient = await failWith(true);
    expect(await t.mutation(api.jobs.retry, { jobId: transient, userId: "alice" })).toEqual({ status: "pending" });
    expect(await t.query(api.jobs.get, { jobId: transient })).not.toHaveProperty("failureRetryable");
  });

  test("maxUnfinished bounds one owner's unfinished jobs; the app's onComplete handle is never shown", async () => {
    const { t, enqueue, job, list } = setup();
    const onComplete = { handle: "function://;app:done", context: { x: 1 } };
    const first = await enqueue({ userId: "alice", maxUnfinished: 2, onComplete });
    await enqueue({ userId: "alice", maxUnfinished: 2 });
    await expect(enqueue({ userId: "alice", maxUnfinished: 2 })).rejects.toThrow(/at most 2 unfinished jobs per user/);
    await enqueue({ userId: "bob", maxUnfinished: 2 });
    await t.mutation(api.jobs.cancel, { jobId: first });
    await enqueue({ userId: "alice", maxUnfinished: 2 });
    expect(await job(first)).not.toHaveProperty("onComplete");
    expect((await list({}))[0]).not.toHaveProperty("onComplete");
  });
});
