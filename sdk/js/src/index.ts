/**
 * edgerec plugin helpers for JavaScript and TypeScript: typed column access,
 * config parsing, output builders and logging over the bindings of the
 * `edgerec:plugin@0.1.0` world (types in `../types`, made by `jco guest-types`).
 *
 * A plugin module exports `stage`, built with {@link definePlugin}:
 *
 * ```ts
 * import { definePlugin, Ranking } from "./edgerec";
 * export const stage = definePlugin({
 *   defaults: { minPrice: 0 },
 *   columns: () => ["price"],
 *   run(ctx, config, cands) {
 *     const price = cands.f64("price");
 *     if (!price) throw new Error("the catalog has no f64 `price` column");
 *     const ranking = new Ranking(cands);
 *     ranking.retain((e) => (price.get(e.index) ?? -Infinity) >= config.minPrice);
 *     ranking.sortByScore();
 *     return ranking.intoOutput();
 *   },
 * });
 * ```
 *
 * Built with jco's QuickJS backend (see `sdk/README.md`). QuickJS has no
 * `TextDecoder`, so the config bytes are decoded here.
 */

import { log as hostLog } from "edgerec:plugin/host@0.1.0";
import type {
  Candidates as WitCandidates,
  Column as WitColumn,
  LogLevel,
  Output as WitOutput,
  RequestContext,
} from "edgerec:plugin/types@0.1.0";

export type { LogLevel, RequestContext, WitCandidates, WitOutput };

// ---------------------------------------------------------------- logging

/** Logs one line through the host (bounded per call: extra lines are dropped and counted). */
export function log(level: LogLevel, message: string): void {
  hostLog(level, message);
}
/** Logs a debug line. */
export const debug = (message: string): void => log("debug", message);
/** Logs an info line. */
export const info = (message: string): void => log("info", message);
/** Logs a warning. */
export const warn = (message: string): void => log("warn", message);
/** Logs an error line (what fails a stage is throwing, not this). */
export const error = (message: string): void => log("error", message);

// ---------------------------------------------------------------- config

/** Decodes UTF-8 bytes (QuickJS has no `TextDecoder`); invalid sequences become U+FFFD. */
export function decodeUtf8(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i];
    let cp = 0xfffd;
    let len = 1;
    if (b0 < 0x80) {
      cp = b0;
    } else if (b0 >= 0xc2 && b0 < 0xe0 && cont(bytes, i + 1)) {
      cp = ((b0 & 0x1f) << 6) | (bytes[i + 1] & 0x3f);
      len = 2;
    } else if (b0 >= 0xe0 && b0 < 0xf0 && cont(bytes, i + 1) && cont(bytes, i + 2)) {
      cp = ((b0 & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f);
      len = 3;
      if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) cp = 0xfffd;
    } else if (b0 >= 0xf0 && b0 < 0xf5 && cont(bytes, i + 1) && cont(bytes, i + 2) && cont(bytes, i + 3)) {
      cp = ((b0 & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
      len = 4;
      if (cp < 0x10000 || cp > 0x10ffff) cp = 0xfffd;
    }
    out += String.fromCodePoint(cp);
    i += len;
  }
  return out;
}

function cont(bytes: Uint8Array, i: number): boolean {
  return i < bytes.length && (bytes[i] & 0xc0) === 0x80;
}

/**
 * Parses a stage config: empty (or blank) bytes give `defaults`; anything else
 * must be a JSON object whose keys are keys of `defaults` (a typo is an error,
 * as in the Rust SDK); missing keys take their default.
 */
export function parseConfig<C extends object>(bytes: Uint8Array, defaults: C): C {
  const text = decodeUtf8(bytes);
  if (text.trim() === "") return { ...defaults };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`invalid stage config: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error("invalid stage config: expected a JSON object");
  }
  for (const key of Object.keys(parsed)) {
    if (!Object.prototype.hasOwnProperty.call(defaults, key)) {
      const known = Object.keys(defaults).join(", ");
      throw new Error(`invalid stage config: unknown field \`${key}\`, expected one of: ${known}`);
    }
  }
  return { ...defaults, ...(parsed as Partial<C>) };
}

// ---------------------------------------------------------------- candidates

/** Rows of a column without a value, as a lookup (empty = none missing). */
function missingFlags(column: WitColumn, n: number): Uint8Array | undefined {
  if (column.missing.length === 0) return undefined;
  const flags = new Uint8Array(n);
  for (const row of column.missing) flags[row] = 1;
  return flags;
}

/** A column of numbers (`f64`). */
export class F64Column {
  /** @internal */
  constructor(readonly values: Float64Array, private readonly missing?: Uint8Array) {}
  /** Row i's value, `undefined` where the catalog has none. */
  get(i: number): number | undefined {
    return this.missing?.[i] ? undefined : this.values[i];
  }
}

/** A column of 64-bit integers (`i64`), as `bigint`. */
export class I64Column {
  /** @internal */
  constructor(readonly values: BigInt64Array, private readonly missing?: Uint8Array) {}
  /** Row i's value, `undefined` where the catalog has none. */
  get(i: number): bigint | undefined {
    return this.missing?.[i] ? undefined : this.values[i];
  }
  /** Row i's value as a `number` (exact up to 2^53). */
  getNumber(i: number): number | undefined {
    const v = this.get(i);
    return v === undefined ? undefined : Number(v);
  }
}

/** A column of booleans. */
export class BoolColumn {
  /** @internal */
  constructor(readonly values: boolean[], private readonly missing?: Uint8Array) {}
  /** Row i's value, `undefined` where the catalog has none. */
  get(i: number): boolean | undefined {
    return this.missing?.[i] ? undefined : this.values[i];
  }
}

/** A dictionary-encoded string column. */
export class StringColumn {
  /** @internal */
  constructor(
    readonly codes: Uint32Array,
    readonly dictionary: string[],
    private readonly missing?: Uint8Array,
  ) {}
  /** Row i's value, `undefined` where the catalog has none. */
  get(i: number): string | undefined {
    return this.missing?.[i] ? undefined : this.dictionary[this.codes[i]];
  }
  /** Row i's dictionary code (equal codes = equal strings): cheap grouping. */
  code(i: number): number | undefined {
    return this.missing?.[i] ? undefined : this.codes[i];
  }
}

/** A list-of-strings column (CSR form). */
export class StringListColumn {
  /** @internal */
  constructor(
    readonly offsets: Uint32Array,
    readonly codes: Uint32Array,
    readonly dictionary: string[],
    private readonly missing?: Uint8Array,
  ) {}
  /** Row i's strings, `undefined` where the catalog has none. */
  get(i: number): string[] | undefined {
    if (this.missing?.[i]) return undefined;
    const out: string[] = [];
    for (let j = this.offsets[i]; j < this.offsets[i + 1]; j++) out.push(this.dictionary[this.codes[j]]);
    return out;
  }
  /** Whether row i's list holds `s` (false where missing). */
  contains(i: number, s: string): boolean {
    if (this.missing?.[i]) return false;
    for (let j = this.offsets[i]; j < this.offsets[i + 1]; j++) {
      if (this.dictionary[this.codes[j]] === s) return true;
    }
    return false;
  }
}

/** The candidates of a stage: ids, current scores and the declared attribute columns, by index `0..length`. */
export class Candidates {
  private readonly byName = new Map<string, WitColumn>();
  private readonly flags = new Map<string, Uint8Array | undefined>();

  /** Wraps the host's candidates, checking the column lengths. */
  constructor(readonly raw: WitCandidates) {
    const n = raw.ids.length;
    if (raw.scores.length !== n) throw new Error("host sent scores of the wrong length");
    for (const column of raw.columns) {
      const v = column.values;
      const rows = v.tag === "string-lists" ? v.val.offsets.length - 1 : v.tag === "strings" ? v.val.codes.length : v.val.length;
      if (rows !== n) throw new Error(`column \`${column.name}\`: ${rows} values for ${n} candidates`);
      this.byName.set(column.name, column);
    }
  }
  /** The number of candidates. */
  get length(): number {
    return this.raw.ids.length;
  }
  /** Item ids, by candidate index. */
  get ids(): BigUint64Array {
    return this.raw.ids;
  }
  /** Current scores, by candidate index (higher is better). */
  get scores(): Float32Array {
    return this.raw.scores;
  }
  /** Names of the columns present (the declared ones the catalog has). */
  columnNames(): string[] {
    return this.raw.columns.map((c) => c.name);
  }
  private column(name: string, tag: string): [WitColumn, Uint8Array | undefined] | undefined {
    const column = this.byName.get(name);
    if (!column || column.values.tag !== tag) return undefined;
    if (!this.flags.has(name)) this.flags.set(name, missingFlags(column, this.length));
    return [column, this.flags.get(name)];
  }
  /** The f64 column `name`, if present and of that type. */
  f64(name: string): F64Column | undefined {
    const c = this.column(name, "f64s");
    return c && c[0].values.tag === "f64s" ? new F64Column(c[0].values.val, c[1]) : undefined;
  }
  /** The i64 column `name`, if present and of that type. */
  i64(name: string): I64Column | undefined {
    const c = this.column(name, "i64s");
    return c && c[0].values.tag === "i64s" ? new I64Column(c[0].values.val, c[1]) : undefined;
  }
  /** The bool column `name`, if present and of that type. */
  bool(name: string): BoolColumn | undefined {
    const c = this.column(name, "bools");
    return c && c[0].values.tag === "bools" ? new BoolColumn(c[0].values.val, c[1]) : undefined;
  }
  /** The string column `name`, if present and of that type. */
  string(name: string): StringColumn | undefined {
    const c = this.column(name, "strings");
    return c && c[0].values.tag === "strings" ? new StringColumn(c[0].values.val.codes, c[0].values.val.dictionary, c[1]) : undefined;
  }
  /** The list-of-strings column `name`, if present and of that type. */
  stringList(name: string): StringListColumn | undefined {
    const c = this.column(name, "string-lists");
    if (!c || c[0].values.tag !== "string-lists") return undefined;
    const v = c[0].values.val;
    return new StringListColumn(v.offsets, v.codes, v.dictionary, c[1]);
  }
}

// ---------------------------------------------------------------- output

/** A stage's answer: kept input indices best first, optional new scores and reasons aligned with them. */
export interface Output {
  /** Kept candidates' input indices, best first (unique, in range). */
  order: number[] | Uint32Array;
  /** New scores, one per entry of `order` (finite). */
  scores?: number[] | Float32Array;
  /** Reason codes, one per entry of `order` ("" for none). */
  reasons?: string[];
}

/** Keeps these candidates in this order, scores unchanged. */
export function fromOrder(order: number[]): Output {
  return { order };
}

/** Keeps every candidate as it came. */
export function unchanged(cands: Candidates): Output {
  return { order: Array.from({ length: cands.length }, (_, i) => i) };
}

/** One candidate in a {@link Ranking}. */
export interface Entry {
  /** Index into the stage's input. */
  index: number;
  /** Current score (an f32: rounded with `Math.fround` when the output is built). */
  score: number;
  /** Reason code for the explain mode ("" for none). */
  reason: string;
}

/** A working list of candidates to filter, re-score and re-order, then turn into an {@link Output}. Starts as the input, in input order. */
export class Ranking {
  /** The entries, best first. */
  entries: Entry[];
  private rescored = false;

  /** Every candidate, in input order, with its current score. */
  constructor(cands: Candidates) {
    this.entries = Array.from(cands.scores, (score, index) => ({ index, score, reason: "" }));
  }
  /** The number of entries kept. */
  get length(): number {
    return this.entries.length;
  }
  /** Keeps the entries for which `keep` is true, in order. */
  retain(keep: (e: Entry) => boolean): void {
    this.entries = this.entries.filter(keep);
  }
  /** Lets `f` change scores and reasons; the output then carries the new scores. */
  rescore(f: (e: Entry) => void): void {
    for (const e of this.entries) f(e);
    this.rescored = true;
  }
  /** Stable sort by score, best first (ties keep their order; NaN last). */
  sortByScore(): void {
    // The order of Rust's `f32::total_cmp`, reversed: NaN last, +0 before -0.
    this.entries.sort((a, b) => {
      const an = Number.isNaN(a.score);
      const bn = Number.isNaN(b.score);
      if (an || bn) return Number(an) - Number(bn);
      if (a.score > b.score) return -1;
      if (a.score < b.score) return 1;
      return Number(Object.is(a.score, -0)) - Number(Object.is(b.score, -0));
    });
  }
  /** Stable sort by a key of your own (ascending). */
  sortByKey(key: (e: Entry) => number | string): void {
    this.entries.sort((a, b) => {
      const ka = key(a);
      const kb = key(b);
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  }
  /** Moves the entries for which `sink` is true after all the others, keeping the order within both groups. */
  bury(sink: (e: Entry) => boolean): void {
    const kept: Entry[] = [];
    const sunk: Entry[] = [];
    for (const e of this.entries) (sink(e) ? sunk : kept).push(e);
    this.entries = kept.concat(sunk);
  }
  /** Keeps the first `n` entries. */
  keepFirst(n: number): void {
    this.entries.length = Math.min(this.entries.length, n);
  }
  /** Moves the entry at position `from` to position `to` (clamped to the end), shifting the others. */
  moveTo(from: number, to: number): void {
    if (from >= this.entries.length) return;
    const [entry] = this.entries.splice(from, 1);
    this.entries.splice(Math.min(to, this.entries.length), 0, entry);
  }
  /**
   * Demotes, never drops: within the first `top` positions at most `maxPerGroup`
   * entries per group (`group(index)`; `undefined` = ungrouped, never capped).
   * Entries over the cap move to just after the top window, keeping their order.
   */
  capPerGroup<K>(top: number, maxPerGroup: number, group: (index: number) => K | undefined): void {
    const counts = new Map<K, number>();
    const head: Entry[] = [];
    const overflow: Entry[] = [];
    const rest: Entry[] = [];
    for (const e of this.entries) {
      if (head.length >= top) {
        rest.push(e);
        continue;
      }
      const key = group(e.index);
      if (key === undefined) {
        head.push(e);
        continue;
      }
      const count = counts.get(key) ?? 0;
      if (count < maxPerGroup) {
        counts.set(key, count + 1);
        head.push(e);
      } else {
        overflow.push(e);
      }
    }
    this.entries = head.concat(overflow, rest);
  }
  /** The output: the order, the scores if {@link rescore} was used, the reasons if any entry has one. */
  intoOutput(): Output {
    const out: Output = { order: Uint32Array.from(this.entries, (e) => e.index) };
    if (this.rescored) out.scores = Float32Array.from(this.entries, (e) => e.score);
    if (this.entries.some((e) => e.reason !== "")) out.reasons = this.entries.map((e) => e.reason);
    return out;
  }
}

// ---------------------------------------------------------------- the stage export

/** What a plugin implements (the JS counterpart of the Rust SDK's `Plugin` trait). */
export interface Plugin<C extends object> {
  /** The config when the operator attached none; also the set of allowed keys. */
  defaults: C;
  /** The attribute columns read with this config; throwing refuses the config (check it here). */
  columns(config: C): string[];
  /** Filters, re-orders or re-scores the candidates; throwing fails the stage. */
  run(ctx: RequestContext, config: C, cands: Candidates): Output;
}

/** The `stage` export of the `edgerec:plugin` world, as the bindings expect it. */
export interface StageExport {
  /** `columns(config) -> result<list<string>, string>`. */
  columns(config: Uint8Array): string[];
  /** `run(ctx, config, candidates) -> result<output, string>`. */
  run(ctx: RequestContext, config: Uint8Array, candidates: WitCandidates): WitOutput;
}

/** Error messages cross the boundary as strings (the `err` of the WIT result). */
function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Adapts a {@link Plugin} to the world's `stage` export: parses the config,
 * wraps the candidates, converts the output (typed arrays, f32 scores) and
 * turns anything thrown into the result's error message.
 */
export function definePlugin<C extends object>(plugin: Plugin<C>): StageExport {
  return {
    columns(config: Uint8Array): string[] {
      try {
        return plugin.columns(parseConfig(config, plugin.defaults));
      } catch (e) {
        throw message(e);
      }
    },
    run(ctx: RequestContext, config: Uint8Array, candidates: WitCandidates): WitOutput {
      try {
        const out = plugin.run(ctx, parseConfig(config, plugin.defaults), new Candidates(candidates));
        const wit: WitOutput = { order: out.order instanceof Uint32Array ? out.order : Uint32Array.from(out.order) };
        if (out.scores !== undefined) wit.scores = out.scores instanceof Float32Array ? out.scores : Float32Array.from(out.scores);
        if (out.reasons !== undefined) wit.reasons = out.reasons;
        return wit;
      } catch (e) {
        throw message(e);
      }
    },
  };
}
