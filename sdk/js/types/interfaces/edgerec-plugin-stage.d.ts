/// <reference path="./edgerec-plugin-types.d.ts" />
declare module 'edgerec:plugin/stage@0.1.0' {
  /**
   * The attribute columns this plugin reads with this config (bytes the
   * operator attached to the stage, JSON by convention; empty = defaults).
   * Called once when a stage is set up, never on the request path. An error
   * means the config is invalid: the stage is refused.
   */
  export function columns(config: Uint8Array): Array<string>;
  /**
   * Filters, re-orders or re-scores the candidates. An error fails the stage
   * (the pipeline's `on-error` policy decides what happens next).
   */
  export function run(ctx: RequestContext, config: Uint8Array, candidates: Candidates): Output;
  export type RequestContext = import('edgerec:plugin/types@0.1.0').RequestContext;
  export type Candidates = import('edgerec:plugin/types@0.1.0').Candidates;
  export type Output = import('edgerec:plugin/types@0.1.0').Output;
}
