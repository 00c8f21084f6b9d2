//! What a plugin component declares about itself, each as the UTF-8 payload
//! of a custom section: its name (`edgerec:plugin-name`, written by the Rust
//! SDK's `export_plugin!` inside the component's core module, or by `edgerec
//! plugin build` for JavaScript at the component's top level) and, for
//! languages other than Rust, its language (`edgerec:plugin-language`,
//! written by `edgerec plugin build`: `js`), which picks the stage's default
//! limits ([`crate::Limits::for_language`]).

/// The custom section that holds a plugin's declared name.
pub const NAME_SECTION: &str = "edgerec:plugin-name";

/// The custom section that holds a plugin's source language (absent: Rust
/// or another language compiled to native wasm).
pub const LANGUAGE_SECTION: &str = "edgerec:plugin-language";

/// The plugin name `bytes` declares, if any section `edgerec:plugin-name`
/// holds UTF-8 text, in the component or any module nested in it. Bytes that
/// do not parse declare nothing (the upload check refuses them anyway).
pub fn declared_name(bytes: &[u8]) -> Option<String> {
    declared(bytes, NAME_SECTION)
}

/// The language `bytes` declares (`js`), if any.
pub fn declared_language(bytes: &[u8]) -> Option<String> {
    declared(bytes, LANGUAGE_SECTION)
}

fn declared(bytes: &[u8], name: &str) -> Option<String> {
    wasmparser::Parser::new(0).parse_all(bytes).map_while(Result::ok).find_map(|payload| match payload {
        wasmparser::Payload::CustomSection(section) if section.name() == name => {
            std::str::from_utf8(section.data()).ok().map(str::to_string)
        }
        _ => None,
    })
}

/// `component` with a top-level `edgerec:plugin-name` section naming it
/// `name` (custom sections may appear between any two sections, so
/// appending one keeps the component valid).
pub fn with_declared_name(component: &[u8], name: &str) -> Vec<u8> {
    with_section(component, NAME_SECTION, name)
}

/// `component` with a top-level `edgerec:plugin-language` section.
pub fn with_declared_language(component: &[u8], language: &str) -> Vec<u8> {
    with_section(component, LANGUAGE_SECTION, language)
}

fn with_section(component: &[u8], name: &str, text: &str) -> Vec<u8> {
    use wasm_encoder::Encode;
    let mut out = component.to_vec();
    out.push(0); // the custom section's id
    wasm_encoder::CustomSection { name: name.into(), data: text.as_bytes().into() }.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_language_is_declared_beside_the_name() {
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(declared_language(&component), None);
        let marked = with_declared_language(&with_declared_name(&component, "rule"), "js");
        assert_eq!(
            (declared_name(&marked).as_deref(), declared_language(&marked).as_deref()),
            (Some("rule"), Some("js"))
        );
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(&marked).unwrap();
    }

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
