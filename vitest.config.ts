import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    environment: "edge-runtime",
    include: ["queue/**/*.test.ts", "convex/**/*.test.ts", "examples/platform-app/**/*.test.ts", "localconvex/**/*.test.ts"],
    server: { deps: { inline: ["convex-test"] } },
  },
});
