// Rolldown settings merged into jco's bundle (`jco componentize --bundle-config`):
// the `edgerec:plugin/...` imports are the component's WIT imports, provided by
// the host, not modules to resolve (without this, the build warns about them).
export default { external: [/^edgerec:/] };
