//! Hand-encoded WebAssembly binaries that strain a compiler while staying
//! small on disk: what the structural caps of a plugin upload must refuse
//! before Cranelift sees them. Encoded byte by byte (no encoder crate) so
//! that malformed and extreme shapes can be written as easily as valid ones.

/// The preamble of a component binary (magic, version 0x0d, layer 1).
const COMPONENT_HEADER: &[u8; 8] = b"\0asm\x0d\0\x01\0";
/// The preamble of a core module binary (magic, version 1).
const MODULE_HEADER: &[u8; 8] = b"\0asm\x01\0\0\0";

/// `n` as unsigned LEB128.
fn leb(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Appends section `id` holding `content`, size-prefixed.
fn section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
    out.push(id);
    out.extend(leb(content.len() as u64));
    out.extend_from_slice(content);
}

/// A component nesting `depth` empty components, one inside the next
/// (~12 bytes a level: 100,000 levels take 1.2 MB).
pub fn nested_components(depth: usize) -> Vec<u8> {
    let mut sizes = vec![COMPONENT_HEADER.len()];
    for k in 1..=depth {
        let inner = sizes[k - 1];
        sizes.push(COMPONENT_HEADER.len() + 1 + leb(inner as u64).len() + inner);
    }
    let mut out = Vec::with_capacity(sizes[depth]);
    for k in (1..=depth).rev() {
        out.extend_from_slice(COMPONENT_HEADER);
        out.push(4); // a component section
        out.extend(leb(sizes[k - 1] as u64));
    }
    out.extend_from_slice(COMPONENT_HEADER);
    out
}

/// A core module of one type `() -> ()`, `declared` functions of it, and
/// `bodies` empty bodies (valid only when the two agree).
fn module_of_empty_functions(declared: u32, bodies: u32) -> Vec<u8> {
    let mut module = MODULE_HEADER.to_vec();
    section(&mut module, 1, &[1, 0x60, 0, 0]); // one type: () -> ()
    let mut functions = leb(declared.into());
    functions.extend(std::iter::repeat_n(0u8, declared as usize));
    section(&mut module, 3, &functions);
    let mut code = leb(bodies.into());
    for _ in 0..bodies {
        code.extend([2, 0, 0x0b]); // 2 bytes: no locals, end
    }
    section(&mut module, 10, &code);
    module
}

/// A component around `module`.
fn component_around(module: &[u8]) -> Vec<u8> {
    let mut component = COMPONENT_HEADER.to_vec();
    section(&mut component, 1, module);
    component
}

/// A component around one core module of `n` empty functions (~4 bytes a
/// function: a million take 4 MB).
pub fn many_functions(n: u32) -> Vec<u8> {
    component_around(&module_of_empty_functions(n, n))
}

/// A component around a module that declares one function and holds `n`
/// bodies: its function and code sections disagree.
pub fn lying_functions(n: u32) -> Vec<u8> {
    component_around(&module_of_empty_functions(1, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_matches_the_spec_examples() {
        assert_eq!(leb(0), [0]);
        assert_eq!(leb(127), [0x7f]);
        assert_eq!(leb(128), [0x80, 0x01]);
        assert_eq!(leb(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn nesting_sizes_add_up() {
        assert_eq!(nested_components(0), COMPONENT_HEADER);
        // header + section id + size (1 byte) + inner header
        assert_eq!(nested_components(1).len(), 8 + 1 + 1 + 8);
        let deep = nested_components(1000);
        assert_eq!(&deep[..8], COMPONENT_HEADER);
        assert_eq!(&deep[deep.len() - 8..], COMPONENT_HEADER);
    }
}
