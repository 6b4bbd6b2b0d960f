/**
 * JSON as the real backend (serde_json) writes it. Convex values: every number is a float64
 * and looks like one (3 -> "3.0"); the official Python client rejects a JSON integer where a
 * Convex value is expected. Sync-protocol envelopes (request ids, versions): plain JSON
 * integers; the same client reconnects forever on a `0.0` there. So an envelope wraps each
 * Convex value it carries in ConvexJson.
 */
export class ConvexJson {
  constructor(readonly value: unknown) {}
}

export function toWireJson(value: unknown, floats = true): string {
  if (value instanceof ConvexJson) return toWireJson(value.value, true);
  if (typeof value === "number") {
    const text = JSON.stringify(value);
    return floats && /^-?\d+$/.test(text) ? `${text}.0` : text;
  }
  if (Array.isArray(value)) return `[${value.map((v) => toWireJson(v, floats)).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const fields = Object.entries(value).filter(([, v]) => v !== undefined);
    return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${toWireJson(v, floats)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** A sync-protocol message: integers stay integers, ConvexJson fields are written as values. */
export const toEnvelopeJson = (message: unknown) => toWireJson(message, false);
