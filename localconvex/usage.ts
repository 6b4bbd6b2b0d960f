/**
 * Convex's per-execution limits, and what every execution costs (GET /_localconvex/usage).
 *
 * convex-test counts each transaction's reads and writes (its TransactionMetricsTracker: one
 * per top-level transaction, a layer per nested call) but, when asked to enforce limits, words
 * them its own way. Here its counting is kept and Convex's limits are checked after each count
 * with Convex's own messages (its crates/database reads.rs and writes.rs), plus what convex-test
 * does not check: execution time and the size of the return value.
 *
 * An execution is a query or mutation that starts a transaction (called over HTTP or a socket,
 * a subscription re-run, a scheduled function, or one an action runs) or an action; a query or
 * mutation called from a query or mutation is part of its caller's execution, as in Convex.
 * Limits hold only inside an execution: localconvex's own transactions (snapshots, restore) are
 * not functions and are neither limited nor counted.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { TransactionMetricsTracker } from "convex-test/dist/transactionMetrics.js";
import { convexToJson, type Value } from "convex/values";

const MiB = 1 << 20;
/** Convex's limits (docs.convex.dev/production/state/limits). */
export const LIMITS = {
  bytesRead: 16 * MiB,
  documentsRead: 32_000,
  indexRanges: 4_096,
  bytesWritten: 16 * MiB,
  documentsWritten: 16_000,
  returnValueBytes: 16 * MiB,
};
/** Convex allows a query or mutation 1 s; localconvex defaults to more so that a loaded test machine does not fail calls. */
export const DEFAULT_TIME_LIMIT_MS = 10_000;
const OVER_LIMIT_HELP =
  "Consider using smaller limits in your queries, paginating your queries, or using indexed queries with a selective index range expressions.";

type Metrics = { bytesRead: number; bytesWritten: number; databaseQueries: number; documentsRead: number; documentsWritten: number };
type Tracker = { _layers: { metrics: Metrics }[] };
type Kind = "query" | "mutation" | "action";
/** The execution running in this async context, and the transaction it started (none for an action). */
type Execution = { kind: Kind; tracker: Tracker | null };

export type FunctionUsage = {
  calls: number;
  documentsRead: number;
  bytesRead: number;
  documentsWritten: number;
  bytesWritten: number;
  maxBytesRead: number;
  maxDocumentsRead: number;
};

const executions = new AsyncLocalStorage<Execution>();
/** The tracker of the transaction begun last: convex-test runs one top-level transaction at a time. */
let openTracker: Tracker | null = null;
let timeLimitMs = DEFAULT_TIME_LIMIT_MS;
let functions = new Map<string, FunctionUsage>();
let limitErrors = 0;

export function setTimeLimit(ms: number) {
  timeLimitMs = ms;
}

export function usageReport() {
  return { functions: Object.fromEntries(functions), limitErrors };
}

export function resetUsage() {
  functions = new Map();
  limitErrors = 0;
}

/** A limit error: counted, and thrown into the function (which then fails, as in Convex). */
function overLimit(message: string): never {
  limitErrors++;
  throw new Error(message);
}

// ---------------------------------------------------------------------------- transactions

const tracker = TransactionMetricsTracker.prototype as unknown as Record<string, (...args: any[]) => void> & Tracker;

const startTransaction = tracker.startTransaction;
tracker.startTransaction = function (this: Tracker, ...args: unknown[]) {
  if (this._layers.length === 0) openTracker = this;
  startTransaction.apply(this, args);
};

/** After convex-test counts, Convex's check: `check` gives the message of a limit the execution went past. */
function limitAfter(method: string, check: (m: Metrics) => string | null) {
  const count = tracker[method];
  tracker[method] = function (this: Tracker, ...args: unknown[]) {
    count.apply(this, args);
    if (executions.getStore()?.tracker !== this) return;
    const message = check(this._layers[this._layers.length - 1].metrics);
    if (message !== null) overLimit(message);
  };
}

limitAfter("trackRead", (m) =>
  m.documentsRead > LIMITS.documentsRead
    ? `Too many documents read in a single function execution (limit: ${LIMITS.documentsRead}). ${OVER_LIMIT_HELP}`
    : m.bytesRead > LIMITS.bytesRead
      ? `Too many bytes read in a single function execution (limit: ${LIMITS.bytesRead} bytes). ${OVER_LIMIT_HELP}`
      : null,
);
limitAfter("trackIndexRange", (m) =>
  m.databaseQueries > LIMITS.indexRanges ? `Too many reads in a single function execution (limit: ${LIMITS.indexRanges}). ${OVER_LIMIT_HELP}` : null,
);
limitAfter("trackWrite", (m) =>
  m.documentsWritten > LIMITS.documentsWritten
    ? `Too many writes in a single function execution (limit: ${LIMITS.documentsWritten})`
    : m.bytesWritten > LIMITS.bytesWritten
      ? `Too many bytes written in a single function execution (limit: ${LIMITS.bytesWritten} bytes)`
      : null,
);

// ---------------------------------------------------------------------------- executions

function record(name: string, metrics: Metrics | undefined, committed: boolean) {
  let entry = functions.get(name);
  if (entry === undefined) {
    entry = { calls: 0, documentsRead: 0, bytesRead: 0, documentsWritten: 0, bytesWritten: 0, maxBytesRead: 0, maxDocumentsRead: 0 };
    functions.set(name, entry);
  }
  entry.calls++;
  if (metrics === undefined) return;
  entry.documentsRead += metrics.documentsRead;
  entry.bytesRead += metrics.bytesRead;
  entry.maxBytesRead = Math.max(entry.maxBytesRead, metrics.bytesRead);
  entry.maxDocumentsRead = Math.max(entry.maxDocumentsRead, metrics.documentsRead);
  // A failed transaction's writes were rolled back: only its reads happened.
  if (committed) {
    entry.documentsWritten += metrics.documentsWritten;
    entry.bytesWritten += metrics.bytesWritten;
  }
}

/** Checks made when a query or mutation returns, before its transaction commits (a failure rolls it back). */
function checkEnd(name: string, startedMs: number, value: unknown) {
  if (performance.now() - startedMs > timeLimitMs) overLimit(`Function execution timed out (maximum duration: ${timeLimitMs / 1000}s)`);
  const size = Buffer.byteLength(JSON.stringify(convexToJson((value ?? null) as Value)));
  if (size > LIMITS.returnValueBytes)
    overLimit(`Function ${name} return value is too large (${size} bytes > maximum size ${LIMITS.returnValueBytes} bytes)`);
}

/** Wraps a registered function's handler (what convex-test runs) to limit and count its executions. */
function instrument(name: string, kind: Kind, handler: (ctx: unknown, args: unknown) => unknown) {
  return async (ctx: unknown, args: unknown) => {
    const outer = executions.getStore();
    const transaction = kind === "action" ? null : openTracker;
    // A scheduled function runs in the async context of the function that scheduled it, but in a new transaction.
    const starts = kind === "action" || outer === undefined || outer.kind === "action" || outer.tracker !== transaction;
    if (!starts) return handler(ctx, args);
    const started = performance.now();
    let ok = false;
    try {
      const value = await executions.run({ kind, tracker: transaction }, () => handler(ctx, args));
      if (kind !== "action") checkEnd(name, started, value);
      ok = true;
      return value;
    } finally {
      record(name, transaction?._layers[0]?.metrics, ok);
    }
  };
}

const instrumented = new WeakSet<object>();

/** Instruments every function a loaded module exports; `prefix` names the component ("" for the app). */
export function instrumentModule(module: Record<string, any>, modulePath: string, prefix: string) {
  for (const [exported, fn] of Object.entries(module)) {
    if (typeof fn !== "function" || typeof fn._handler !== "function" || instrumented.has(fn)) continue;
    const kind: Kind | null = fn.isQuery ? "query" : fn.isMutation ? "mutation" : fn.isAction ? "action" : null;
    if (kind === null) continue;
    instrumented.add(fn);
    fn._handler = instrument(`${prefix}${modulePath}:${exported}`, kind, fn._handler);
  }
  return module;
}
