/// <reference path="./edgerec-plugin-types.d.ts" />
declare module 'edgerec:plugin/host@0.1.0' {
  /**
   * Logs one line. The host keeps a bounded number of lines and bytes per
   * call and drops the rest (counting them).
   */
  export function log(level: LogLevel, message: string): void;
  export type LogLevel = import('edgerec:plugin/types@0.1.0').LogLevel;
}
