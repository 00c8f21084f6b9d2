//! The name a plugin component declares for itself: the UTF-8 payload of
//! the custom section `edgerec:plugin-name`, written by the Rust SDK's
//! `export_plugin!` (inside the component's core module) or by `edgerec
//! plugin build` for JavaScript (at the component's top level).

/// The custom section that holds a plugin's declared name.
pub const NAME_SECTION: &str = "edgerec:plugin-name";

/// The plugin name `bytes` declares, if any section `edgerec:plugin-name`
/// holds UTF-8 text, in the component or any module nested in it. Bytes that
/// do not parse declare nothing (the upload check refuses them anyway).
pub fn declared_name(bytes: &[u8]) -> Option<String> {
    wasmparser::Parser::new(0).parse_all(bytes).map_while(Result::ok).find_map(|payload| match payload {
        wasmparser::Payload::CustomSection(section) if section.name() == NAME_SECTION => {
            std::str::from_utf8(section.data()).ok().map(str::to_string)
        }
        _ => None,
    })
}

/// `component` with a top-level `edgerec:plugin-name` section naming it
/// `name` (custom sections may appear between any two sections, so
/// appending one keeps the component valid).
pub fn with_declared_name(component: &[u8], name: &str) -> Vec<u8> {
    use wasm_encoder::Encode;
    let mut out = component.to_vec();
    out.push(0); // the custom section's id
    wasm_encoder::CustomSection { name: NAME_SECTION.into(), data: name.as_bytes().into() }.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_at_the_top_level_and_inside_a_nested_module() {
        let component =
            wat::parse_str("(component (core module (@custom \"edgerec:plugin-name\" \"inner\")))").unwrap();
        assert_eq!(declared_name(&component).as_deref(), Some("inner"));
        let plain = wat::parse_str("(component (core module))").unwrap();
        assert_eq!(declared_name(&plain), None);
        let named = with_declared_name(&plain, "outer");
        assert_eq!(declared_name(&named).as_deref(), Some("outer"));
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(&named).unwrap();
        assert_eq!(declared_name(b"not wasm"), None);
    }
}
