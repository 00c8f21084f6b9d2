//! Append-only string dictionaries shared by every version of a column.
//!
//! A code, once given to a string, means that string in every version: the
//! [`Interner`] behind a column's versions only ever appends, so an upsert
//! never re-encodes untouched rows and an old version reads its codes as it
//! always did. Each version keeps a [`StringsView`] (the strings known when it
//! was made, in chunks behind `Arc`), read without a lock; the lock guards the
//! string → code map, which only writers (build, upsert) use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Strings per chunk of a dictionary: appending copies at most one partial
/// chunk of pointers when an older version still shares it.
const STRINGS_PER_CHUNK: usize = 1024;

/// The strings of a dictionary up to some length, code = position.
#[derive(Clone, Debug, Default)]
pub(crate) struct StringsView {
    chunks: Vec<Arc<Vec<Arc<str>>>>,
    len: usize,
}

impl StringsView {
    /// The string with this code (`None` past this view's end).
    pub(crate) fn get(&self, code: u32) -> Option<&str> {
        let code = code as usize;
        if code >= self.len {
            return None;
        }
        Some(&self.chunks[code / STRINGS_PER_CHUNK][code % STRINGS_PER_CHUNK])
    }

    /// How many strings the view has.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every string, in code order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.chunks.iter().flat_map(|chunk| chunk.iter().map(|s| &**s))
    }

    fn push(&mut self, s: Arc<str>) {
        if self.len.is_multiple_of(STRINGS_PER_CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(STRINGS_PER_CHUNK)));
        }
        let last = self.chunks.len() - 1;
        // Copies the chunk only while an older version's view shares it.
        Arc::make_mut(&mut self.chunks[last]).push(s);
        self.len += 1;
    }
}

/// The string → code map and the strings themselves, written by one version
/// at a time and shared by all.
#[derive(Debug, Default)]
struct Interner {
    codes: HashMap<Arc<str>, u32>,
    strings: StringsView,
    /// UTF-8 bytes of all strings (for [`Dictionary::bytes`]).
    string_bytes: usize,
}

/// A column's dictionary as one version sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dictionary {
    interner: Arc<Mutex<Interner>>,
    view: StringsView,
}

impl Dictionary {
    /// The strings this version can decode.
    pub(crate) fn view(&self) -> &StringsView {
        &self.view
    }

    /// The code of `s`, appended if new. Call [`Dictionary::refresh`] before
    /// the version is read, so that its view covers every code handed out.
    pub(crate) fn code(&self, s: &str) -> u32 {
        // A writer that panicked mid-append left every mapped code valid (the
        // map entry is written last; at worst a string gets a second code that
        // decodes the same), so a poisoned lock is still usable.
        let mut interner = self.interner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&code) = interner.codes.get(s) {
            return code;
        }
        let code = interner.strings.len() as u32;
        let shared: Arc<str> = Arc::from(s);
        interner.strings.push(Arc::clone(&shared));
        interner.string_bytes += s.len();
        interner.codes.insert(shared, code);
        code
    }

    /// Brings this version's view up to every string interned so far.
    pub(crate) fn refresh(&mut self) {
        let interner = self.interner.lock().unwrap_or_else(PoisonError::into_inner);
        if interner.strings.len() != self.view.len() {
            self.view = interner.strings.clone();
        }
    }

    /// Approximate heap bytes of the dictionary, shared by all versions: the
    /// strings, their `Arc` headers, the chunk pointers and the map's slots
    /// (allocator overhead not included).
    pub(crate) fn bytes(&self) -> usize {
        let interner = self.interner.lock().unwrap_or_else(PoisonError::into_inner);
        let strings = interner.string_bytes + interner.strings.len() * (2 * size_of::<usize>());
        let pointers = interner.strings.chunks.len() * STRINGS_PER_CHUNK * size_of::<Arc<str>>();
        let map = interner.codes.capacity() * (size_of::<(Arc<str>, u32)>() + 1);
        strings + pointers + map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are stable across versions, an old view does not see later
    /// strings, and a new view sees old and new ones.
    #[test]
    fn versions_share_codes_and_keep_their_views() {
        let mut v1 = Dictionary::default();
        let words: Vec<String> = (0..STRINGS_PER_CHUNK + 10).map(|i| format!("w{i}")).collect();
        for (i, w) in words.iter().enumerate() {
            assert_eq!(v1.code(w), i as u32);
        }
        assert_eq!(v1.code("w3"), 3);
        v1.refresh();
        let mut v2 = v1.clone();
        assert_eq!(v2.code("new"), words.len() as u32);
        v2.refresh();
        assert_eq!(v1.view().len(), words.len());
        assert_eq!(v1.view().get(words.len() as u32), None);
        assert_eq!(v2.view().get(words.len() as u32), Some("new"));
        assert_eq!(v2.view().get(5), Some("w5"));
        assert_eq!(v1.view().iter().collect::<Vec<_>>(), words.iter().map(String::as_str).collect::<Vec<_>>());
        // The full first chunk is shared, not copied.
        assert!(Arc::ptr_eq(&v1.view().chunks[0], &v2.view().chunks[0]));
        assert!(!Arc::ptr_eq(&v1.view().chunks[1], &v2.view().chunks[1]));
    }
}
