// A deliberately misbehaving JS plugin for host/cli/tests/plugin_js.rs: the
// runtime must stop it exactly as it stops the hostile Rust plugin.
// Config: {"mode": "ok" | "loop" | "grow" | "throw" | "log"}.

import { definePlugin, info, unchanged } from "../../../sdk/js/src/index";

const hoard: string[][] = [];

export const stage = definePlugin({
  defaults: { mode: "ok" },
  columns: () => [],
  run(_ctx, config, cands) {
    switch (config.mode) {
      case "loop":
        // Never returns: only fuel or the deadline ends it.
        for (;;) {}
      case "grow":
        // Keeps allocating until the memory limit refuses.
        for (;;) hoard.push(new Array(1 << 16).fill("x"));
      case "throw":
        throw new Error("hostile: asked to fail");
      case "log":
        for (let i = 0; i < 1000; i++) info(`line ${i}`);
        return unchanged(cands);
      default:
        return unchanged(cands);
    }
  },
});
