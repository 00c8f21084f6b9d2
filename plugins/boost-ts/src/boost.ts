// `boost` in TypeScript: the first-party Rust plugin (`plugins/boost`) ported
// rule for rule, to show (and test) that a JS plugin gives the same answers.
//
// Config (JSON): {"rules": [{"name"?, "attribute", "op", "value"?, "action"}]}
// ops: eq ne lt le gt ge contains present missing; actions: {"multiply": x},
// {"add": x}, "bury", {"pin": position}. Effects: every multiply/add in rule
// order, a stable sort by score, buried items to the end, then pinned items
// to their positions (rule order); each matching rule adds its name (or
// `rule<i>`) to the item's reason. Scores are f32, as in Rust: every step is
// rounded with Math.fround, so the numbers are bit-identical.

import { Candidates, definePlugin, Ranking } from "../../../sdk/js/src/index";

type Op = "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "contains" | "present" | "missing";
type Action = { multiply: number } | { add: number } | "bury" | { pin: number };
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface Rule {
  name: string | null;
  attribute: string;
  op: Op;
  value: Json;
  action: Action;
}

const OPS: readonly string[] = ["eq", "ne", "lt", "le", "gt", "ge", "contains", "present", "missing"];

/** Checks the shape of the config as serde does in the Rust plugin (unknown fields, types). */
function parseRules(raw: unknown): Rule[] {
  if (!Array.isArray(raw)) throw new Error("invalid stage config: `rules` must be a list");
  return raw.map((r: unknown, i: number): Rule => {
    if (r === null || typeof r !== "object" || Array.isArray(r)) throw new Error(`rule ${i}: expected an object`);
    const rule = r as Record<string, Json>;
    for (const key of Object.keys(rule)) {
      if (!["name", "attribute", "op", "value", "action"].includes(key)) throw new Error(`rule ${i}: unknown field \`${key}\``);
    }
    const name = rule.name ?? null;
    if (name !== null && typeof name !== "string") throw new Error(`rule ${i}: \`name\` must be a string`);
    if (typeof rule.attribute !== "string") throw new Error(`rule ${i}: \`attribute\` must be a string`);
    if (typeof rule.op !== "string" || !OPS.includes(rule.op)) throw new Error(`rule ${i}: unknown op ${JSON.stringify(rule.op)}`);
    return { name, attribute: rule.attribute, op: rule.op as Op, value: rule.value ?? null, action: parseAction(rule.action, i) };
  });
}

function parseAction(a: Json | undefined, i: number): Action {
  if (a === "bury") return "bury";
  if (a !== null && typeof a === "object" && !Array.isArray(a) && Object.keys(a).length === 1) {
    const [kind, x] = Object.entries(a)[0];
    if ((kind === "multiply" || kind === "add") && typeof x === "number") {
      // serde reads an f32: the value rounded to single precision.
      return kind === "multiply" ? { multiply: Math.fround(x) } : { add: Math.fround(x) };
    }
    if (kind === "pin" && typeof x === "number" && Number.isInteger(x) && x >= 0) return { pin: x };
  }
  throw new Error(`rule ${i}: invalid action ${JSON.stringify(a)}`);
}

/** The operand checks the Rust plugin makes at config time. */
function check(rule: Rule): string | undefined {
  if (rule.attribute === "") return "`attribute` must be non-empty";
  const v = rule.value;
  let ok: boolean;
  switch (rule.op) {
    case "present":
    case "missing":
      ok = true;
      break;
    case "lt":
    case "le":
    case "gt":
    case "ge":
      ok = typeof v === "number";
      break;
    case "contains":
      ok = typeof v === "string";
      break;
    default:
      ok = typeof v === "number" || typeof v === "string" || typeof v === "boolean";
  }
  return ok ? undefined : `op ${rule.op} does not take the value ${JSON.stringify(v)}`;
}

/** `undefined` = the op does not apply to this type (an error at run time). */
function presence(op: Op, present: boolean): boolean | undefined {
  if (op === "present") return present;
  if (op === "missing") return !present;
  return undefined;
}

function number(rule: Rule, v: number | undefined): boolean | undefined {
  const p = presence(rule.op, v !== undefined);
  if (p !== undefined) return p;
  if (typeof rule.value !== "number") return undefined;
  const operand = rule.value;
  if (v === undefined) return false;
  switch (rule.op) {
    case "eq": return v === operand;
    case "ne": return v !== operand;
    case "lt": return v < operand;
    case "le": return v <= operand;
    case "gt": return v > operand;
    case "ge": return v >= operand;
    default: return undefined;
  }
}

function boolean(rule: Rule, v: boolean | undefined): boolean | undefined {
  const p = presence(rule.op, v !== undefined);
  if (p !== undefined) return p;
  if (typeof rule.value !== "boolean") return undefined;
  if (v === undefined) return false;
  if (rule.op === "eq") return v === rule.value;
  if (rule.op === "ne") return v !== rule.value;
  return undefined;
}

function string(rule: Rule, v: string | undefined): boolean | undefined {
  const p = presence(rule.op, v !== undefined);
  if (p !== undefined) return p;
  if (typeof rule.value !== "string") return undefined;
  if (v === undefined) return false;
  if (rule.op === "eq") return v === rule.value;
  if (rule.op === "ne") return v !== rule.value;
  if (rule.op === "contains") return v.includes(rule.value);
  return undefined;
}

function list(rule: Rule, v: string[] | undefined): boolean | undefined {
  const p = presence(rule.op, v !== undefined);
  if (p !== undefined) return p;
  if (typeof rule.value !== "string") return undefined;
  if (v === undefined) return false;
  if (rule.op === "contains") return v.includes(rule.value);
  return undefined;
}

/** Whether the rule's predicate holds, per candidate. An absent column means every value is missing. */
function evaluate(rule: Rule, cands: Candidates): boolean[] {
  const n = cands.length;
  const name = rule.attribute;
  const mismatch = () =>
    new Error(`op ${rule.op} with value ${JSON.stringify(rule.value)} does not apply to column \`${name}\``);
  const rows = (at: (i: number) => boolean | undefined): boolean[] => {
    const out: boolean[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const holds = at(i);
      if (holds === undefined) throw mismatch();
      out[i] = holds;
    }
    return out;
  };
  const f = cands.f64(name);
  if (f) return rows((i) => number(rule, f.get(i)));
  const g = cands.i64(name);
  if (g) return rows((i) => number(rule, g.getNumber(i)));
  const b = cands.bool(name);
  if (b) return rows((i) => boolean(rule, b.get(i)));
  const s = cands.string(name);
  if (s) {
    // Once per distinct string, then look codes up.
    const perCode = s.dictionary.map((d) => string(rule, d));
    const absent = string(rule, undefined);
    if (absent === undefined) throw mismatch();
    return rows((i) => {
      const code = s.code(i);
      return code === undefined ? absent : perCode[code];
    });
  }
  const l = cands.stringList(name);
  if (l) return rows((i) => list(rule, l.get(i)));
  return new Array<boolean>(n).fill(rule.op === "missing");
}

export const stage = definePlugin({
  defaults: { rules: [] as unknown[] },

  columns(config) {
    const rules = parseRules(config.rules);
    const columns: string[] = [];
    rules.forEach((rule, i) => {
      const problem = check(rule);
      if (problem !== undefined) throw new Error(`rule ${i}: ${problem}`);
      const action = rule.action;
      if (typeof action === "object" && "multiply" in action && !Number.isFinite(action.multiply)) {
        throw new Error(`rule ${i}: the action's number must be finite`);
      }
      if (typeof action === "object" && "add" in action && !Number.isFinite(action.add)) {
        throw new Error(`rule ${i}: the action's number must be finite`);
      }
      if (!columns.includes(rule.attribute)) columns.push(rule.attribute);
    });
    return columns;
  },

  run(_ctx, config, cands) {
    const rules = parseRules(config.rules);
    const matches = rules.map((rule, r) => {
      try {
        return evaluate(rule, cands);
      } catch (e) {
        throw new Error(`rule ${r}: ${(e as Error).message}`);
      }
    });
    const ranking = new Ranking(cands);
    ranking.rescore((e) => {
      rules.forEach((rule, r) => {
        if (!matches[r][e.index]) return;
        const action = rule.action;
        if (typeof action === "object" && "multiply" in action) e.score = Math.fround(e.score * action.multiply);
        if (typeof action === "object" && "add" in action) e.score = Math.fround(e.score + action.add);
        const name = rule.name ?? `rule${r}`;
        e.reason = e.reason === "" ? name : `${e.reason},${name}`;
      });
    });
    ranking.sortByScore();
    ranking.bury((e) => rules.some((rule, r) => rule.action === "bury" && matches[r][e.index]));
    rules.forEach((rule, r) => {
      const action = rule.action;
      if (typeof action !== "object" || !("pin" in action)) return;
      const pinned = ranking.entries.map((e) => e.index).filter((i) => matches[r][i]);
      pinned.forEach((index, k) => {
        const from = ranking.entries.findIndex((e) => e.index === index);
        if (from >= 0) ranking.moveTo(from, action.pin + k);
      });
    });
    return ranking.intoOutput();
  },
});
