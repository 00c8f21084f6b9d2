//! A column's chunks in two levels, so that a new version of a column copies
//! a short list of group pointers, not one pointer per chunk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::chunk::Chunk;

/// Chunks per group: a version's copy of a column clones one pointer per
/// 64 × 256 rows (61 for a million rows), and its first write into a group
/// copies that group's 64 chunk pointers.
const GROUP: usize = 64;

type Group = Arc<Vec<Arc<Chunk>>>;

/// The chunks of one column version; chunk c is `groups[c / GROUP][c % GROUP]`.
#[derive(Clone, Debug)]
pub(crate) struct ChunkList {
    groups: Vec<Group>,
    len: usize,
}

impl ChunkList {
    /// `len` positions all holding `chunk`, shared (and full groups shared too).
    pub(crate) fn filled(chunk: Chunk, len: usize) -> ChunkList {
        let chunk = Arc::new(chunk);
        let full: Group = Arc::new(vec![Arc::clone(&chunk); GROUP]);
        let mut groups = Vec::with_capacity(len.div_ceil(GROUP));
        groups.resize(len / GROUP, full);
        if !len.is_multiple_of(GROUP) {
            groups.push(Arc::new(vec![chunk; len % GROUP]));
        }
        ChunkList { groups, len }
    }

    /// Chunk `c`.
    pub(crate) fn get(&self, c: usize) -> &Arc<Chunk> {
        &self.groups[c / GROUP][c % GROUP]
    }

    /// Chunk `c` to write, its group and itself copied first if another
    /// version shares them.
    pub(crate) fn make_mut(&mut self, c: usize) -> &mut Chunk {
        Arc::make_mut(&mut Arc::make_mut(&mut self.groups[c / GROUP])[c % GROUP])
    }

    /// Every position's chunk, in order (a shared chunk once per position).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Chunk>> {
        self.groups.iter().flat_map(|group| group.iter())
    }

    /// The list with every distinct chunk replaced by `convert(chunk)`,
    /// positions and groups that shared one still sharing its replacement.
    pub(crate) fn map(&self, convert: impl Fn(&Chunk) -> Chunk) -> ChunkList {
        let mut chunks: HashMap<*const Chunk, Arc<Chunk>> = HashMap::new();
        let mut groups: HashMap<*const Vec<Arc<Chunk>>, Group> = HashMap::new();
        let mut out = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            if let Some(done) = groups.get(&Arc::as_ptr(group)) {
                out.push(Arc::clone(done));
                continue;
            }
            let mut converted = Vec::with_capacity(group.len());
            for chunk in group.iter() {
                let new = chunks.entry(Arc::as_ptr(chunk)).or_insert_with(|| Arc::new(convert(chunk)));
                converted.push(Arc::clone(new));
            }
            let converted = Arc::new(converted);
            groups.insert(Arc::as_ptr(group), Arc::clone(&converted));
            out.push(converted);
        }
        ChunkList { groups: out, len: self.len }
    }

    /// Calls `f` on every chunk no other position, group or version shares.
    pub(crate) fn for_each_unique(&mut self, mut f: impl FnMut(&mut Chunk)) {
        for group in &mut self.groups {
            if let Some(group) = Arc::get_mut(group) {
                group.iter_mut().filter_map(Arc::get_mut).for_each(&mut f);
            }
        }
    }

    /// Bytes of the chunks and groups this list holds that `older` does not
    /// (each counted once), plus its own list of group pointers.
    pub(crate) fn bytes_beyond(&self, older: Option<&ChunkList>) -> usize {
        let old_groups: HashSet<*const Vec<Arc<Chunk>>> =
            older.map(|o| o.groups.iter().map(Arc::as_ptr).collect()).unwrap_or_default();
        let old_chunks: HashSet<*const Chunk> = older.map(|o| o.iter().map(Arc::as_ptr).collect()).unwrap_or_default();
        let (mut seen_groups, mut seen_chunks) = (HashSet::new(), HashSet::new());
        let mut bytes = self.groups.capacity() * size_of::<Group>();
        for group in &self.groups {
            let ptr = Arc::as_ptr(group);
            if old_groups.contains(&ptr) || !seen_groups.insert(ptr) {
                continue;
            }
            bytes += 2 * size_of::<usize>() + size_of::<Vec<Arc<Chunk>>>() + group.capacity() * size_of::<Arc<Chunk>>();
            for chunk in group.iter() {
                let ptr = Arc::as_ptr(chunk);
                if !old_chunks.contains(&ptr) && seen_chunks.insert(ptr) {
                    bytes += chunk.bytes();
                }
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Cell;
    use crate::kind::Kind;

    #[test]
    fn a_write_copies_one_group_and_one_chunk() {
        let mut v1 = ChunkList::filled(Chunk::missing(Kind::I64), GROUP * 2 + 3);
        assert_eq!(v1.iter().count(), GROUP * 2 + 3);
        v1.make_mut(GROUP + 1).set(7, Some(Cell::I64(5)), false);
        let mut v2 = v1.clone();
        v2.make_mut(GROUP + 2).set(0, Some(Cell::I64(6)), false);
        assert_eq!(v1.get(GROUP + 1).get(7), Some(Cell::I64(5)));
        assert_eq!(v1.get(GROUP + 2).get(0), None);
        assert_eq!(v2.get(GROUP + 2).get(0), Some(Cell::I64(6)));
        assert!(Arc::ptr_eq(&v1.groups[0], &v2.groups[0]) && Arc::ptr_eq(&v1.groups[2], &v2.groups[2]));
        assert!(!Arc::ptr_eq(&v1.groups[1], &v2.groups[1]));
        assert!(Arc::ptr_eq(v1.get(GROUP + 1), v2.get(GROUP + 1)));
        // What v2 holds beyond v1: its group list, the copied group, the written chunk.
        let group = 2 * size_of::<usize>() + size_of::<Vec<Arc<Chunk>>>() + GROUP * size_of::<Arc<Chunk>>();
        let chunk = Chunk::missing(Kind::I64).bytes();
        assert_eq!(v2.bytes_beyond(Some(&v1)), 3 * size_of::<Group>() + group + chunk);
        // Widening keeps every sharing: two distinct chunks, three distinct groups.
        let widened = v2.map(Chunk::widened);
        assert_eq!(widened.get(GROUP + 2).get(0), Some(Cell::F64(6.0)));
        assert_eq!(widened.get(GROUP + 1).get(7), Some(Cell::F64(5.0)));
        let distinct: HashSet<_> = widened.iter().map(Arc::as_ptr).collect();
        assert_eq!(distinct.len(), 3, "the empty chunk and the two written ones");
        assert_eq!(widened.bytes_beyond(None), v2.bytes_beyond(None));
    }
}
