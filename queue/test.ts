// For host apps' tests: registers the queue component with convex-test, as app.use() installs it.
import type { TestConvex } from "convex-test";
import schema from "./component/schema";

const modules = import.meta.glob(["./component/**/*.ts", "!./component/**/*.test.ts"]);

export function registerQueue(t: TestConvex<any>, name = "fondationQueue"): void {
  t.registerComponent(name, schema, modules);
}
