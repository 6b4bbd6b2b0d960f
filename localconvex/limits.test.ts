// @vitest-environment node
// localconvex holds every execution to Convex's limits, with Convex's messages, and accounts it
// (GET /_localconvex/usage): a real server running the small app of test-app/, over real HTTP.
import crypto from "node:crypto";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Running, startLocalConvex } from "./spawn.js";

const ADMIN_KEY = crypto.randomBytes(16).toString("hex");
const APP = path.join(__dirname, "test-app");
const HELP = "Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions.";
const servers: Running[] = [];
let url: string;

async function start(...args: string[]) {
  const running = await startLocalConvex(["--functions", APP, ...args], { CONVEX_ADMIN_KEY: ADMIN_KEY });
  servers.push(running);
  return running.url;
}

beforeAll(async () => {
  url = await start();
}, 60_000);

afterAll(() => {
  for (const s of servers) s.process.kill("SIGTERM");
});

/** Calls limits:<name> over HTTP; resolves with Convex's answer ({status, value} or {status, errorMessage}). */
async function call(kind: "query" | "mutation", name: string, args: object, base = url) {
  const res = await fetch(`${base}/api/${kind}`, { method: "POST", body: JSON.stringify({ path: `limits:${name}`, args }) });
  expect(res.status).toBe(200);
  return (await res.json()) as { status: string; value?: unknown; errorMessage?: string };
}

const ok = async (answer: Promise<{ status: string; value?: unknown; errorMessage?: string }>) => {
  const a = await answer;
  expect(a.errorMessage).toBeUndefined();
  return a.value;
};

async function usage(base = url) {
  return (await (await fetch(`${base}/_localconvex/usage`)).json()) as { functions: Record<string, Record<string, number>>; limitErrors: number };
}

test("more than 16 MiB read in one execution is refused, as Convex words it", async () => {
  for (let i = 0; i < 3; i++) await ok(call("mutation", "insert", { group: 1, count: 6, size: 1_000_000 }));
  expect(await call("query", "readGroup", { group: 1 })).toMatchObject({
    status: "error",
    errorMessage: `Uncaught Error: Too many bytes read in a single function execution (limit: 16777216 bytes). ${HELP}`,
  });
  // Nested queries are part of their caller's execution: the same limit holds for both together.
  expect((await call("query", "nested", { group: 1 })).errorMessage).toContain("Too many bytes read");
}, 60_000);

test("more than 32,000 documents scanned in one execution is refused", async () => {
  // Its own server: convex-test scans every document of a component for each index range, so
  // 32,000 documents would slow every other test down.
  const crowded = await start();
  for (let i = 0; i < 3; i++) await ok(call("mutation", "insert", { group: 2, count: 10_667, size: 1 }, crowded));
  expect(await call("query", "readGroup", { group: 2 }, crowded)).toMatchObject({
    status: "error",
    errorMessage: `Uncaught Error: Too many documents read in a single function execution (limit: 32000). ${HELP}`,
  });
}, 120_000);

test("more than 4,096 index ranges in one execution are refused", async () => {
  expect(await ok(call("query", "ranges", { count: 4_096 }))).toBe(4_096);
  expect(await call("query", "ranges", { count: 4_097 })).toMatchObject({
    status: "error",
    errorMessage: `Uncaught Error: Too many reads in a single function execution (limit: 4096). ${HELP}`,
  });
}, 60_000);

test("more than 16,000 documents or 16 MiB written in one execution are refused, and nothing of it stays", async () => {
  expect(await call("mutation", "insert", { group: 3, count: 16_001, size: 1 })).toMatchObject({
    status: "error",
    errorMessage: "Uncaught Error: Too many writes in a single function execution (limit: 16000)",
  });
  expect(await call("mutation", "insert", { group: 3, count: 17, size: 1_000_000 })).toMatchObject({
    status: "error",
    errorMessage: "Uncaught Error: Too many bytes written in a single function execution (limit: 16777216 bytes)",
  });
  expect(await ok(call("query", "readGroup", { group: 3 }))).toBe(0);
}, 60_000);

test("a return value over 16 MiB is refused", async () => {
  expect(await ok(call("query", "big", { size: 1000 }))).toHaveLength(1000);
  expect(await call("query", "big", { size: 16 * 1024 * 1024 })).toMatchObject({
    status: "error",
    errorMessage: "Uncaught Error: Function limits:big return value is too large (16777218 bytes > maximum size 16777216 bytes)",
  });
}, 60_000);

test("an execution longer than --time-limit-ms fails and its writes are rolled back", async () => {
  const short = await start("--time-limit-ms", "1000");
  expect(await call("mutation", "slow", { ms: 3000 }, short)).toMatchObject({
    status: "error",
    errorMessage: "Uncaught Error: Function execution timed out (maximum duration: 1s)",
  });
  expect(await ok(call("query", "readGroup", { group: -100 }, short))).toBe(0);
  expect((await usage(short)).limitErrors).toBe(1);
}, 60_000);

test("usage counts each execution's calls, reads and writes; only the admin resets it", async () => {
  const reset = (key?: string) =>
    fetch(`${url}/_localconvex/usage/reset`, { method: "POST", headers: key === undefined ? {} : { Authorization: `Convex ${key}` } });
  expect((await reset()).status).toBe(401);
  expect((await reset("wrong")).status).toBe(401);
  expect((await reset(ADMIN_KEY)).status).toBe(200);
  expect(await usage()).toEqual({ functions: {}, limitErrors: 0 });

  await ok(call("mutation", "insert", { group: 4, count: 3, size: 1000 }));
  expect(await ok(call("query", "readGroup", { group: 4 }))).toBe(3);
  expect(await ok(call("query", "nested", { group: 4 }))).toBe(3);
  await call("query", "ranges", { count: 4_097 });
  const { functions, limitErrors } = await usage();
  expect(limitErrors).toBe(1);
  expect(functions["limits:insert"]).toMatchObject({ calls: 1, documentsWritten: 3, documentsRead: 0 });
  expect(functions["limits:insert"].bytesWritten).toBeGreaterThan(3000);
  expect(functions["limits:readGroup"]).toMatchObject({ calls: 1, documentsRead: 3, maxDocumentsRead: 3, documentsWritten: 0 });
  expect(functions["limits:readGroup"].bytesRead).toBeGreaterThan(3000);
  // The nested readGroup is part of `nested`'s one execution: counted there, not as a second call.
  expect(functions["limits:nested"]).toMatchObject({ calls: 1, documentsRead: 3 });
  expect(functions["limits:ranges"]).toMatchObject({ calls: 1 });
}, 60_000);
