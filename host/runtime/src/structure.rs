//! The shape of an upload, checked with wasmparser before the compiler sees
//! it. Compiling costs far more than the file's size suggests: a component
//! nested inside 100,000 others (1.2 MB) took the compiler past 12 GB, and
//! 1M empty functions (5 MB) compiled for over a minute. One pass over the
//! section headers counts what drives that cost and refuses a component
//! over any cap at the first section that passes it, so a hostile file
//! costs a read of at most its own bytes.

use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload};

use crate::error::PluginError;

/// Caps on a plugin component's structure, each far above what a plugin
/// needs (see each field) and far below what strains the compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StructureCaps {
    /// Components and core modules inside one another, the top-level
    /// component counting 1. Default 8: a `wasm32-wasip2` component is 2
    /// deep (core modules inside it), and a component made of components
    /// one or two more.
    pub max_depth: u32,
    /// Components, nested ones included (the top level counts 1). Default 64.
    pub max_components: u32,
    /// Core modules. Default 64 (a Rust plugin has a handful: the program,
    /// the WASI adapter and shims).
    pub max_modules: u32,
    /// Core functions defined, over all modules. Default 100,000: a Rust
    /// plugin defines a few hundred, an interpreter (QuickJS) a few thousand.
    pub max_functions: u32,
    /// Imports (core and component), over the whole file. Default 10,000.
    pub max_imports: u32,
    /// Exports (core and component), over the whole file. Default 10,000.
    pub max_exports: u32,
    /// Custom sections (names, producers, plugin name, …). Default 1,000.
    pub max_custom_sections: u32,
    /// Every other definition: types, instances, aliases, canonical
    /// functions, tables, memories, globals, element and data segments.
    /// Default 100,000.
    pub max_other_definitions: u32,
}

impl Default for StructureCaps {
    fn default() -> Self {
        StructureCaps {
            max_depth: 8,
            max_components: 64,
            max_modules: 64,
            max_functions: 100_000,
            max_imports: 10_000,
            max_exports: 10_000,
            max_custom_sections: 1_000,
            max_other_definitions: 100_000,
        }
    }
}

/// What a component holds, as [`check_structure`] counted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Structure {
    /// Deepest nesting (the top-level component is 1).
    pub depth: u32,
    /// Components, the top level included.
    pub components: u32,
    /// Core modules.
    pub modules: u32,
    /// Core functions defined.
    pub functions: u32,
    /// Imports, core and component.
    pub imports: u32,
    /// Exports, core and component.
    pub exports: u32,
    /// Custom sections.
    pub custom_sections: u32,
    /// Every other definition.
    pub other_definitions: u32,
}

/// Counts `bytes`' structure against `caps`; refuses it at the first cap
/// it passes. Bytes that do not parse are refused as the compiler would.
pub fn check_structure(bytes: &[u8], caps: &StructureCaps) -> Result<Structure, PluginError> {
    let mut seen = Structure::default();
    let mut open: u32 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| PluginError::Invalid { message: e.to_string() })?;
        match &payload {
            Payload::Version { encoding, .. } => {
                open += 1;
                seen.depth = seen.depth.max(open);
                check("levels of nesting", seen.depth, caps.max_depth)?;
                match encoding {
                    wasmparser::Encoding::Component => {
                        tally("components", &mut seen.components, 1, caps.max_components)?;
                    }
                    wasmparser::Encoding::Module => tally("core modules", &mut seen.modules, 1, caps.max_modules)?,
                }
            }
            Payload::End(_) => open = open.saturating_sub(1),
            Payload::FunctionSection(s) => tally("core functions", &mut seen.functions, s.count(), caps.max_functions)?,
            // Bodies are checked apart from declarations: a file may lie in either.
            Payload::CodeSectionStart { count, .. } => check("core function bodies", *count, caps.max_functions)?,
            Payload::ImportSection(s) => tally("imports", &mut seen.imports, s.count(), caps.max_imports)?,
            Payload::ComponentImportSection(s) => tally("imports", &mut seen.imports, s.count(), caps.max_imports)?,
            Payload::ExportSection(s) => tally("exports", &mut seen.exports, s.count(), caps.max_exports)?,
            Payload::ComponentExportSection(s) => tally("exports", &mut seen.exports, s.count(), caps.max_exports)?,
            Payload::CustomSection(_) => {
                tally("custom sections", &mut seen.custom_sections, 1, caps.max_custom_sections)?;
            }
            other => {
                if let Some(n) = other_count(other) {
                    tally("other definitions", &mut seen.other_definitions, n, caps.max_other_definitions)?;
                }
            }
        }
    }
    Ok(seen)
}

/// The entry count of a section that is neither a function, import,
/// export nor custom section.
fn other_count(payload: &Payload<'_>) -> Option<u32> {
    Some(match payload {
        Payload::TypeSection(s) => s.count(),
        Payload::TableSection(s) => s.count(),
        Payload::MemorySection(s) => s.count(),
        Payload::TagSection(s) => s.count(),
        Payload::GlobalSection(s) => s.count(),
        Payload::ElementSection(s) => s.count(),
        Payload::DataSection(s) => s.count(),
        Payload::InstanceSection(s) => s.count(),
        Payload::CoreTypeSection(s) => s.count(),
        Payload::ComponentInstanceSection(s) => s.count(),
        Payload::ComponentAliasSection(s) => s.count(),
        Payload::ComponentTypeSection(s) => s.count(),
        Payload::ComponentCanonicalSection(s) => s.count(),
        _ => return None,
    })
}

fn check(what: &str, count: u32, max: u32) -> Result<(), PluginError> {
    if count > max {
        return Err(PluginError::TooComplex { what: what.to_owned(), count, max });
    }
    Ok(())
}

/// Adds `n` to a counter and checks it against its cap.
fn tally(what: &str, count: &mut u32, n: u32, max: u32) -> Result<(), PluginError> {
    *count = count.saturating_add(n);
    check(what, *count, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_component_is_counted_and_passes() {
        let bytes = wat::parse_str(
            r#"(component
                (core module (func (export "f")) (func) (@custom "x" ""))
                (component (import "i" (func)))
            )"#,
        )
        .unwrap();
        let seen = check_structure(&bytes, &StructureCaps::default()).unwrap();
        assert_eq!((seen.depth, seen.components, seen.modules, seen.functions), (2, 2, 1, 2));
        assert_eq!((seen.imports, seen.exports), (1, 1));
        assert!(seen.custom_sections >= 1, "{seen:?}");
    }

    #[test]
    fn each_cap_refuses_at_its_bound_plus_one() {
        let bytes = wat::parse_str(r#"(component (core module (func) (func) (func)))"#).unwrap();
        let caps = StructureCaps { max_functions: 3, ..StructureCaps::default() };
        assert!(check_structure(&bytes, &caps).is_ok());
        let caps = StructureCaps { max_functions: 2, ..StructureCaps::default() };
        let error = check_structure(&bytes, &caps).unwrap_err();
        assert!(matches!(error, PluginError::TooComplex { count: 3, max: 2, .. }), "{error}");
        let caps = StructureCaps { max_depth: 1, ..StructureCaps::default() };
        assert!(matches!(check_structure(&bytes, &caps), Err(PluginError::TooComplex { .. })));
        assert!(matches!(check_structure(b"\0asm\x0d\0\x01\0garbage", &caps), Err(PluginError::Invalid { .. })));
    }
}
