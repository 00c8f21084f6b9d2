declare module 'edgerec:plugin/types@0.1.0' {
  /**
   * One thing the shopper did recently.
   */
  export interface Event {
    /**
     * Item id (the catalog's numeric id).
     */
    item: bigint,
    /**
     * What they did: "view", "cart", "purchase", ... (free-form, lower case by convention).
     */
    action: string,
    /**
     * When, in unix seconds.
     */
    ts: bigint,
  }
  /**
   * What the host knows about the request. Never changes between stages.
   */
  export interface RequestContext {
    /**
     * The merchant.
     */
    tenant: string,
    /**
     * The shopper, when known.
     */
    user?: string,
    /**
     * How many items the storefront wants back.
     */
    k: number,
    /**
     * The request's time in unix seconds (plugins have no clock of their own).
     */
    now: bigint,
    /**
     * Free-form attributes of the request: page, locale, device, ...
     */
    attributes: Array<[string, string]>,
    /**
     * The shopper's recent events, oldest first.
     */
    recentEvents: Array<Event>,
  }
  /**
   * A string column, dictionary-encoded: `dictionary[codes[i]]` is row i's value.
   */
  export interface StringColumn {
    codes: Uint32Array,
    dictionary: Array<string>,
  }
  /**
   * A list-of-strings column in CSR form: row i's strings are
   * `dictionary[codes[offsets[i]..offsets[i+1]]]`; `offsets` has one entry more than rows.
   */
  export interface StringListColumn {
    offsets: Uint32Array,
    codes: Uint32Array,
    dictionary: Array<string>,
  }
  /**
   * The values of one column, all of one type, one per candidate.
   */
  export type ColumnValues = ColumnValuesF64s | ColumnValuesI64s | ColumnValuesBools | ColumnValuesStrings | ColumnValuesStringLists;
  export interface ColumnValuesF64s {
    tag: 'f64s',
    val: Float64Array,
  }
  export interface ColumnValuesI64s {
    tag: 'i64s',
    val: BigInt64Array,
  }
  export interface ColumnValuesBools {
    tag: 'bools',
    val: Array<boolean>,
  }
  export interface ColumnValuesStrings {
    tag: 'strings',
    val: StringColumn,
  }
  export interface ColumnValuesStringLists {
    tag: 'string-lists',
    val: StringListColumn,
  }
  /**
   * One catalog attribute column.
   */
  export interface Column {
    /**
     * The attribute's name, as the plugin declared it.
     */
    name: string,
    /**
     * One value per candidate (meaningless at the rows listed in `missing`).
     */
    values: ColumnValues,
    /**
     * Rows (candidate indices, ascending) where the catalog has no value.
     */
    missing: Uint32Array,
  }
  /**
   * The candidates, as parallel columns: row i of every list is candidate i.
   */
  export interface Candidates {
    /**
     * Item ids.
     */
    ids: BigUint64Array,
    /**
     * Current scores (the model's, or the previous stage's), higher is better.
     */
    scores: Float32Array,
    /**
     * The attribute columns the plugin declared, in the order it declared them.
     * A declared attribute the catalog does not have at all is absent here.
     */
    columns: Array<Column>,
  }
  /**
   * The stage's answer.
   */
  export interface Output {
    /**
     * The kept candidates, best first, as indices into the input. Dropping =
     * leaving out. Indices must be unique and in range.
     */
    order: Uint32Array,
    /**
     * New scores, one per entry of `order` (finite), or none to keep the input's.
     */
    scores?: Float32Array,
    /**
     * Reason codes, one per entry of `order` ("" for none), for the explain mode.
     */
    reasons?: Array<string>,
  }
  /**
   * Log severity.
   * # Variants
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
}
