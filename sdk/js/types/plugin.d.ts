/// <reference path="./interfaces/edgerec-plugin-host.d.ts" />
/// <reference path="./interfaces/edgerec-plugin-stage.d.ts" />
/// <reference path="./interfaces/edgerec-plugin-types.d.ts" />
declare module 'edgerec:plugin/plugin@0.1.0' {
  export type * as EdgerecPluginHost010 from 'edgerec:plugin/host@0.1.0'; // import edgerec:plugin/host@0.1.0
  export type * as EdgerecPluginTypes010 from 'edgerec:plugin/types@0.1.0'; // import edgerec:plugin/types@0.1.0
  export * as stage from 'edgerec:plugin/stage@0.1.0'; // export edgerec:plugin/stage@0.1.0
}
