// @vitest-environment node
// The official JS client (`convex/browser`) against a real localconvex over a real WebSocket
// (/api/<version>/sync, 127.0.0.1 only).
import type { ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { afterAll, beforeAll, expect, test } from "vitest";
import WebSocket from "ws";
import { startLocalConvex } from "./spawn.js";

const ADMIN_KEY = crypto.randomBytes(16).toString("hex");
let server: ChildProcess;
let url: string;
const clients: ConvexClient[] = [];

beforeAll(async () => {
  ({ url, process: server } = await startLocalConvex([], { CONVEX_ADMIN_KEY: ADMIN_KEY, FONDATION_WORKER_TOKEN: "test-worker-token" }));
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  server?.kill("SIGTERM");
});

function client() {
  const c = new ConvexClient(url, { webSocketConstructor: WebSocket as any, skipConvexDeploymentUrlCheck: true });
  clients.push(c);
  return c;
}

/** An unsigned JWT: localconvex takes its claims as the caller's identity. */
function identityToken(subject: string) {
  const part = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${part({ alg: "none", typ: "JWT" })}.${part({ iss: "https://localconvex.test", sub: subject })}.`;
}

/** Resolves with the first value `onUpdate` gives that satisfies `ok`. */
function nextUpdate<T>(c: ConvexClient, name: string, args: object, ok: (v: T) => boolean) {
  return new Promise<T>((resolve, reject) => {
    const unsubscribe = c.onUpdate(
      makeFunctionReference<"query">(name),
      args,
      (value: any) => {
        if (!ok(value)) return;
        unsubscribe();
        resolve(value);
      },
      reject,
    );
  });
}

const enqueue = makeFunctionReference<"mutation">("jobs:enqueue");
const request = { repositoryUrl: "https://github.com/owner/repo", prompt: "p" };
const firstPage = { paginationOpts: { numItems: 10, cursor: null } };

test("a signed-in user's subscription sees their own job as soon as it is queued", async () => {
  const alice = client();
  alice.setAuth(async () => identityToken("alice"));
  const empty = await nextUpdate<any>(alice, "jobs:list", firstPage, () => true);
  expect(empty.page).toEqual([]);
  const seen = nextUpdate<any>(alice, "jobs:list", firstPage, (jobs) => jobs.page.length === 1);
  const jobId = await alice.mutation(enqueue, request);
  expect((await seen).page[0]._id).toBe(jobId);
  expect(await alice.query(makeFunctionReference<"query">("jobs:get"), { jobId })).toMatchObject({ _id: jobId, status: "pending" });
}, 30_000);

test("identities are kept apart and anonymous callers are refused, as over HTTP", async () => {
  const bob = client();
  bob.setAuth(async () => identityToken("bob"));
  expect((await bob.query(makeFunctionReference<"query">("jobs:list"), firstPage)).page).toEqual([]);
  const anonymous = client();
  await expect(anonymous.mutation(enqueue, request)).rejects.toThrow(/unauthorized/);
}, 30_000);

test("the admin key reaches internal functions; without it they do not exist", async () => {
  const admin = client();
  (admin as any).setAdminAuth(ADMIN_KEY); // @internal in the client's types: the dashboard's and CLI's way in
  const stats = await admin.query(makeFunctionReference<"query">("operator:stats"), {});
  expect(stats.counts.pending).toBeGreaterThanOrEqual(1);
  const anonymous = client();
  await expect(anonymous.query(makeFunctionReference<"query">("operator:stats"), {})).rejects.toThrow(/Could not find public function/);
}, 30_000);
