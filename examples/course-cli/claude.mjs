// The course CLI's Claude engine (`cli.mjs analyze <repo> --engine claude`): the real Claude Code,
// driven through @anthropic-ai/claude-agent-sdk (its bundled native binary: Node 18+ is enough),
// one query() per step, cwd the clone, the tools the real Fondation CLI allows. It writes the same
// layout as the offline engine and logs through the same logger; a step that leaves its files
// unwritten, or a query that ends in an error, fails the run ("Analysis failed", exit 1).
//
// Claude Code reads its settings from the environment the agent gives the job (docs/cli-contract.md:
// ANTHROPIC_BASE_URL, the credential, no non-essential traffic, bounded retries, a HOME of its own);
// the engine passes that environment through unchanged. The Claude Code it runs is the SDK's bundled
// binary, or the host's pinned one when FONDATION_CLAUDE_CODE names it (cli.mjs resolves it).

import fs from "node:fs";
import path from "node:path";
import { query } from "@anthropic-ai/claude-agent-sdk";

// The real CLI's tools. `dontAsk` runs exactly these and refuses the rest without asking anyone
// (`bypassPermissions` is refused when running as root, as CI does).
const TOOLS = ["Read", "Write", "Edit", "Bash", "Glob", "Grep"];
const MAX_TURNS = 60;
const MAX_CHAPTERS = 40;

function shown(p) { return JSON.stringify(p); }

// step3_order.yaml's chapter names, read as the prompt asks them written (`- index: N` then
// `name: X` per entry), so the engine needs no YAML library.
function orderedNames(orderFile) {
  const names = [];
  for (const m of fs.readFileSync(orderFile, "utf8").matchAll(/^\s*(?:-\s*)?name:\s*(.+?)\s*$/gm)) {
    names.push(m[1].replace(/^(["'])(.*)\1$/, "$2"));
  }
  if (names.length === 0) throw new Error("step3_order.yaml lists no chapter");
  return names.slice(0, MAX_CHAPTERS);
}

function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60) || "chapter";
}

function fileList(files) { return files.map((f) => `- \`${f}\``).join("\n"); }

// What each step asks Claude, and the files it must leave behind (absolute paths, named in the
// prompt so the model, and the tests' scripted model, know where to write).
function stepPlan(n, ctx) {
  const out = (...parts) => path.join(ctx.output, ...parts);
  const focus = ctx.prompt ? `\nThe person asking for the course wants: ${ctx.prompt}\n` : "";
  switch (n) {
    case 1: return { files: [out("step1_abstractions.yaml")], ask:
      `Read the repository in the current directory and find its 3 to 8 core abstractions.${focus}
Write them as YAML, a list of {name, description, file_paths} (file_paths relative to the repository), to:` };
    case 2: return { files: [out("step2_relationships.yaml")], ask:
      `Read ${shown(out("step1_abstractions.yaml"))} and the code it points to. Write as YAML
{summary, relationships: [{from_abstraction, to_abstraction, label, evidence}]} (abstractions by index), to:` };
    case 3: return { files: [out("step3_order.yaml")], ask:
      `Read ${shown(out("step1_abstractions.yaml"))} and ${shown(out("step2_relationships.yaml"))}. Decide the order
in which a newcomer should learn the abstractions, foundations first. Write as YAML
{order: [{index, name, reasoning}]}, each entry's "- index:" then "name:" on their own lines, to:` };
    default: {
      const kind = { 4: ["chapters", "chapter_", "Write one Markdown chapter per abstraction of"],
        5: ["reviewed-chapters", "reviewed_chapter_", "Review and improve each chapter of"],
        6: ["tutorials", "tutorial_", "Write one short hands-on exercise per chapter of"] }[n];
      const [dir, prefix, task] = kind;
      const files = ctx.chapters.map((name, i) => out(dir, `${prefix}${i + 1}_${slug(name)}.md`));
      fs.mkdirSync(out(dir), { recursive: true });
      const sources = n === 4 ? shown(out("step3_order.yaml")) : shown(out(n === 5 ? "chapters" : "reviewed-chapters"));
      return { files, ask:
        `${task} ${sources}, in that order, each starting with a "# " heading naming it. Write them to:` };
    }
  }
}

async function runStep(n, ctx, log) {
  const plan = stepPlan(n, ctx);
  const options = {
    cwd: ctx.root,
    pathToClaudeCodeExecutable: ctx.claudeCode,
    additionalDirectories: [ctx.output],
    tools: TOOLS,
    allowedTools: TOOLS,
    permissionMode: "dontAsk",
    maxTurns: MAX_TURNS,
    stderr: (text) => process.stderr.write(text),
  };
  let result = null;
  for await (const message of query({ prompt: `${plan.ask}\n${fileList(plan.files)}\n`, options })) {
    if (message.type === "assistant") {
      for (const block of message.message.content) {
        if (block.type === "tool_use") log("info", `Claude: ${block.name}`, { target: block.input?.file_path ?? block.input?.pattern ?? block.input?.command });
      }
    } else if (message.type === "result") result = message;
  }
  if (!result) throw new Error("Claude Code ended without a result");
  if (result.is_error || result.subtype !== "success") {
    const why = result.subtype === "success" ? result.result : (result.errors ?? []).join("; ") || result.subtype;
    throw new Error(`Claude Code: ${why}`);
  }
  const missing = plan.files.filter((f) => !fs.existsSync(f)).map((f) => path.relative(ctx.output, f));
  if (missing.length) throw new Error(`Claude did not write ${missing.join(", ")}`);
  const u = result.usage ?? {};
  log("info", `step ${n} done`, { turns: result.num_turns, inputTokens: u.input_tokens, outputTokens: u.output_tokens, ms: result.duration_ms });
  return result;
}

// claudeCode: the host's pinned Claude Code, resolved by the caller; undefined runs the SDK's own.
export async function runClaude({ root, output, prompt, log, step, claudeCode }) {
  const ctx = { root, output, prompt, chapters: [], claudeCode };
  if (ctx.claudeCode) log("info", "Claude Code pinned by the host", { path: ctx.claudeCode });
  let turns = 0;
  for (let n = 1; n <= 6; n++) {
    step();
    turns += (await runStep(n, ctx, log)).num_turns;
    if (n === 3) ctx.chapters = orderedNames(path.join(output, "step3_order.yaml"));
  }
  log("info", "Analysis complete!", { chapters: ctx.chapters.length, tutorials: ctx.chapters.length, turns });
  return 0;
}
