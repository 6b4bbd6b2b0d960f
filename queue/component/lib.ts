// Rules shared by the queue's functions: who may call, what is valid, and the numbers.
import type { PaginationOptions, PaginationResult } from "convex/server";
import { ConvexError } from "convex/values";
// The vocabulary and limits the agent checks too, defined once for both languages, inside the
// component so that queue/ imports nothing outside itself (the agent's Python package ships a copy).
import rules from "./rules.json";
import type { Doc } from "./_generated/dataModel";
import { env } from "./_generated/server";

// Literal types for the schema and the client's types, which a JSON import cannot give; checked
// against the JSON file when this module loads, so a copy that differs cannot deploy or test.
export const ACTIVE_STATUSES = ["running", "cloning", "analyzing", "gathering"] as const;
export const UNFINISHED_STATUSES = ["pending", ...ACTIVE_STATUSES] as const;
export const ALL_STATUSES = [...UNFINISHED_STATUSES, "completed", "failed", "canceled"] as const;
export type ActiveStatus = (typeof ACTIVE_STATUSES)[number];
export type Status = (typeof ALL_STATUSES)[number];
// A document's kind: the platform's docs table takes these only.
export const DOC_KINDS = ["chapter", "tutorial", "toc", "yaml"] as const;
export type DocKind = (typeof DOC_KINDS)[number];
// A log line's level (worker:heartbeat's logs).
export const LOG_LEVELS = ["debug", "info", "warning", "error", "critical"] as const;
const ERROR_CODES = ["unauthorized", "invalid_argument", "not_found", "conflict"] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

function requireSame(name: string, typed: readonly string[], defined: readonly string[]): void {
  if (typed.join() !== defined.join()) {
    throw new Error(`queue/component/lib.ts: ${name} [${typed}] differ from rules.json's [${defined}]`);
  }
}
requireSame("active statuses", ACTIVE_STATUSES, rules.statuses.active);
requireSame("statuses", ALL_STATUSES, [...rules.statuses.waiting, ...rules.statuses.active, ...rules.statuses.finished]);
requireSame("error codes", ERROR_CODES, rules.errorCodes);
requireSame("doc kinds", DOC_KINDS, rules.docKinds);
requireSame("log levels", LOG_LEVELS, rules.logLevels);

export const DEFAULT_MAX_ATTEMPTS = 3;
export const MAX_MAX_ATTEMPTS = 10;
export const BACKOFF_BASE_MS = 5_000;
export const BACKOFF_CAP_MS = 10 * 60_000;
export const MIN_LEASE_MS = 1_000;
// Releases for host problems (worker:release's hostFailureKind) before the job fails: the problem is
// read from the CLI's output, which the job controls, so a hostile job could otherwise pause host
// after host and never end.
export const MAX_HOST_RELEASES = 3;
export const MAX_LEASE_MS = 60 * 60_000;

export const MAX_URL_LENGTH = rules.limits.maxUrlLength;
export const MAX_PROMPT_LENGTH = 20_000;
export const MAX_ERROR_LENGTH = rules.limits.maxErrorLength;
export const MAX_PROGRESS_LENGTH = rules.limits.maxProgressLength;
// A Convex document is at most 1 MiB; keep room for the other fields.
export const MAX_DOC_CONTENT_BYTES = rules.limits.maxDocContentBytes;
export const MAX_DOCS_PER_CALL = rules.limits.maxDocsPerCall;
export const MAX_BYTES_PER_CALL = rules.limits.maxBytesPerCall;
// Also the largest chapterIndex.
export const MAX_DOCS_PER_JOB = rules.limits.maxDocsPerJob;
export const MAX_DEDUP_KEY_LENGTH = 200;
// paginationOpts.numItems of jobs:list and docs:byJob.
export const MAX_PAGE_SIZE = rules.limits.maxPageSize;
// A cancel's reason (shown as the canceled job's error) and the host app's metadata of a job.
export const MAX_REASON_LENGTH = rules.limits.maxReasonLength;
export const MAX_METADATA_BYTES = rules.limits.maxMetadataBytes;
// The tail of a job's CLI output that the component keeps (worker:heartbeat's logs).
export const MAX_LOG_LINES = rules.limits.maxLogLines;
export const MAX_LOG_BYTES = rules.limits.maxLogBytes;
export const MAX_LOG_LINE_LENGTH = rules.limits.maxLogLineLength;
// The shards jobs are spread over (jobs.shard): claims start at a random one, so that concurrent
// claims read and write different parts of the queue.
export const SHARDS = 4;
export const MAX_TITLE_LENGTH = rules.limits.maxTitleLength;
// currentStep and totalSteps of a heartbeat.
export const MAX_STEP = rules.limits.maxStep;
// A document's slug: what the UI puts in its URLs.
export const SLUG_PATTERN = new RegExp(rules.slugPattern);
// worker:fail's errorKind: the kinds of rules.json, and any other snake_case a host app's worker names.
export const ERROR_KIND_PATTERN = new RegExp(rules.errorKindPattern);
// The kind Convex itself sets, when the workers' leases on a job expired maxAttempts times.
export const LEASE_EXPIRED = "lease_expired";
requireSame("the lease_expired kind", [LEASE_EXPIRED], rules.errorKinds.filter((kind) => kind === LEASE_EXPIRED));

/** A refusal the caller can act on: `data.code` for programs, `data.message` for people. */
export function refuse(code: ErrorCode, message: string): never {
  throw new ConvexError({ code, message });
}

export function isActive(status: Doc<"jobs">["status"]): boolean {
  return (ACTIVE_STATUSES as readonly string[]).includes(status);
}

/** Compares in time that depends only on the lengths, so a caller cannot guess the token byte by byte. */
function constantTimeEqual(a: string, b: string): boolean {
  const length = Math.max(a.length, b.length);
  let difference = a.length ^ b.length;
  for (let i = 0; i < length; i++) {
    difference |= (a.charCodeAt(i) || 0) ^ (b.charCodeAt(i) || 0);
  }
  return difference === 0;
}

/** Every worker function starts here: no configured token means no worker may call at all. */
export function requireWorker(workerToken: string): void {
  const expected = env.FONDATION_WORKER_TOKEN;
  if (!expected || !constantTimeEqual(workerToken, expected)) {
    refuse("unauthorized", "worker token refused (FONDATION_WORKER_TOKEN is unset or differs)");
  }
}

export function requireLength(name: string, value: string, max: number): void {
  if (value.length > max) {
    refuse("invalid_argument", `${name} is too long (${value.length} characters, at most ${max})`);
  }
}

export function requireErrorKind(name: string, value: string): void {
  if (!ERROR_KIND_PATTERN.test(value)) {
    refuse("invalid_argument", `${name} ${JSON.stringify(value)} must be snake_case, at most 50 characters`);
  }
}

export function requireInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    refuse("invalid_argument", `${name} must be a whole number from ${min} to ${max}, not ${value}`);
  }
}

// Git ref names (git check-ref-format) narrowed further: no leading dash, so a branch can
// never be read as an option by git.
const BRANCH_PATTERN = /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)[A-Za-z0-9._\/-]{1,200}(?<![./])$/;

export function requireBranch(branch: string): void {
  if (acceptsAnyRepository()) return;
  if (!BRANCH_PATTERN.test(branch) || branch.endsWith(".lock")) {
    refuse("invalid_argument", `branch ${JSON.stringify(branch)} is not a valid branch name`);
  }
}

/**
 * A deployment used for demos and tests may set FONDATION_ACCEPT_ANY_REPOSITORY_URL=1: then any
 * repository URL and branch is queued, so that the agent's own checks (which never trust the
 * queue) can be exercised with hostile URLs, branches and local paths.
 */
function acceptsAnyRepository(): boolean {
  return env.FONDATION_ACCEPT_ANY_REPOSITORY_URL === "1";
}

// A git repository's path on its host (/owner/name, deeper groups, or /name.git), no query, no fragment,
// and none of the characters a shell or git's options would read (`;`, spaces, quotes, `$`, …).
const REPOSITORY_PATH_PATTERN = /^(\/[A-Za-z0-9_.~-]+)+\/?$/;

/** Repositories are https git URLs without credentials: https://host/owner/name[.git]. */
export function requireRepositoryUrl(repositoryUrl: string): void {
  requireLength("repositoryUrl", repositoryUrl, MAX_URL_LENGTH);
  if (acceptsAnyRepository()) return;
  let url: URL;
  try {
    url = new URL(repositoryUrl);
  } catch {
    refuse("invalid_argument", `repositoryUrl ${JSON.stringify(repositoryUrl)} is not a URL`);
  }
  if (url.protocol !== "https:") {
    refuse("invalid_argument", `repositoryUrl must be an https URL, not ${url.protocol.replace(":", "")}`);
  }
  if (url.username || url.password) {
    refuse("invalid_argument", "repositoryUrl must not contain credentials");
  }
  if (!REPOSITORY_PATH_PATTERN.test(url.pathname) || url.search || url.hash || /[\s;"'`$\\]/.test(repositoryUrl)) {
    refuse("invalid_argument", `repositoryUrl ${JSON.stringify(repositoryUrl)} is not a git repository URL (https://host/owner/name)`);
  }
}

/** The host app's metadata of a job: any value, at most MAX_METADATA_BYTES as JSON. */
export function requireMetadata(metadata: unknown): void {
  const bytes = new TextEncoder().encode(JSON.stringify(metadata)).length;
  if (bytes > MAX_METADATA_BYTES) {
    refuse("invalid_argument", `metadata is too large (${bytes} bytes as JSON, at most ${MAX_METADATA_BYTES})`);
  }
}

export function requirePageSize(paginationOpts: PaginationOptions): void {
  requireInteger("paginationOpts.numItems", paginationOpts.numItems, 1, MAX_PAGE_SIZE);
}

/**
 * One page of `query` (a Convex paginated query), its items mapped: bad paginationOpts are the
 * caller's error (invalid_argument), never a scan or an internal error.
 */
export async function page<T, R>(
  query: { paginate(opts: PaginationOptions): Promise<PaginationResult<T>> },
  paginationOpts: PaginationOptions,
  map: (item: T) => R,
): Promise<PaginationResult<R>> {
  requirePageSize(paginationOpts);
  let result: PaginationResult<T>;
  try {
    result = await query.paginate(paginationOpts);
  } catch (error) {
    if (paginationOpts.cursor === null) throw error;
    refuse("invalid_argument", `paginationOpts.cursor ${JSON.stringify(paginationOpts.cursor)} is not a cursor of this list`);
  }
  return { ...result, page: result.page.map(map) };
}

/**
 * The first documents of `query` until they add up to `maxBytes` (as `size` counts them; always at
 * least one), and whether more remain: a batch bounded by what it reads, not by a count of
 * documents whose sizes vary from bytes to a megabyte. The document that would overflow is read
 * (that is how its size is known) but left for the next batch.
 */
export async function takeBytes<T>(
  query: AsyncIterable<T>,
  maxBytes: number,
  size: (doc: T) => number,
): Promise<{ page: T[]; more: boolean }> {
  const taken: T[] = [];
  let bytes = 0;
  for await (const doc of query) {
    const docBytes = size(doc);
    if (taken.length > 0 && bytes + docBytes > maxBytes) return { page: taken, more: true };
    taken.push(doc);
    bytes += docBytes;
  }
  return { page: taken, more: false };
}

/** What a list that has nothing for the caller answers (another user's job, a job with no docs yet). */
export function emptyPage(): PaginationResult<never> {
  return { page: [], isDone: true, continueCursor: "" };
}

export function newLeaseToken(claims: number): string {
  const random = new Uint8Array(16);
  crypto.getRandomValues(random);
  const hex = Array.from(random, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${claims}-${hex}`;
}

/** Full jitter: a uniform delay up to min(cap, base * 2^(attempt-1)). */
export function backoffMs(attempt: number): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
  return Math.floor(Math.random() * ceiling);
}

/** What callers outside the worker see of a job: never the current fencing token (staged holds it too), nor the app's callbacks. */
export function publicJob(job: Doc<"jobs">) {
  const {
    leaseToken: _leaseToken,
    docsLeaseToken: _docsLeaseToken,
    staged: _staged,
    onComplete: _onComplete,
    onStatusChange: _onStatusChange,
    attemptUsage: _attemptUsage,
    ...rest
  } = job;
  return rest;
}
