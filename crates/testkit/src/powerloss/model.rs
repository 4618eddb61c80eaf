//! The disk a [`super::PowerLossDisk`] shows: an in-memory tree of files and directories in
//! which every inode has a *current* state (what reads see) and a *durable* state (what
//! survives a power cut). Pure data structure, no FUSE: [`super::fs`] translates kernel
//! requests into these calls.
//!
//! The durability model (deliberately the harshest a POSIX file system may be):
//! - **File data and size** (`write`, including mmap writeback, which reaches a FUSE file
//!   system as WRITE requests; truncation and extension) change the current state only. An
//!   `fsync` of the file (FSYNC: `fsync`, `fdatasync`, `msync(MS_SYNC)`, `sync_file_range`
//!   does not count) copies its whole current content and size into the durable state.
//!   Nothing is ever written back on its own: unsynced data is lost at a cut however old it
//!   is (ext4 `data=ordered` may lose it too; it only writes it back sooner).
//! - **Names** (create, mkdir, rename, unlink, rmdir) change the current entries of the
//!   directories involved. An `fsync` of a directory (FSYNCDIR) copies its current entries
//!   into its durable entries. An fsync of a file does not make its name durable, and a
//!   rename between two directories is durable in each only once each is synced (so a power
//!   cut may leave the file under both names or none): POSIX promises no more, and ext4 with
//!   `data=ordered` keeps names in its journal, which only makes them durable sooner.
//! - **A power cut** ([`Model::power_cut`]) turns every inode's durable state into its current
//!   state and forgets every inode no durable entry reaches from the root. An inode whose name
//!   is durable but whose data never was comes back empty. A torn cut
//!   ([`Model::power_cut_torn`]) first keeps, for one file, its current bytes below a given
//!   offset, as a disk that wrote that file's pages back in order and lost power midway.
//!
//! Attributes other than the size (mode, times) are not modelled as volatile: the store never
//! depends on them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::SystemTime;

/// Bytes per page of file data.
pub(crate) const PAGE: u64 = 4096;

/// The inode number of the root directory (FUSE's).
pub(crate) const ROOT: u64 = 1;

type Page = Arc<[u8; PAGE as usize]>;

/// A file's bytes: a length and the pages written so far (missing pages read as zeros).
/// Pages are shared between the current and durable state until written again.
#[derive(Clone, Debug, Default)]
struct Data {
    len: u64,
    pages: BTreeMap<u64, Page>,
}

impl Data {
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - within);
            let page = self
                .pages
                .entry(index)
                .or_insert_with(|| Arc::new([0; PAGE as usize]));
            Arc::make_mut(page)[within..within + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
        self.len = self.len.max(offset + bytes.len() as u64);
    }

    fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        let end = self.len.min(offset.saturating_add(size as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = ((end - at) as usize).min(PAGE as usize - within);
            match self.pages.get(&index) {
                Some(page) => out.extend_from_slice(&page[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            at += n as u64;
        }
        out
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.pages.retain(|&index, _| index * PAGE < len);
            let within = (len % PAGE) as usize;
            if within != 0 {
                if let Some(page) = self.pages.get_mut(&(len / PAGE)) {
                    Arc::make_mut(page)[within..].fill(0);
                }
            }
        }
        self.len = len;
    }
}

#[derive(Debug)]
enum Body {
    File {
        current: Data,
        durable: Data,
    },
    Dir {
        current: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

#[derive(Debug)]
struct Node {
    body: Body,
    perm: u16,
    mtime: SystemTime,
}

/// What kind of inode a number names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

/// The attributes reads see.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attr {
    pub(crate) ino: u64,
    pub(crate) kind: Kind,
    pub(crate) size: u64,
    /// Pages holding data, so `st_blocks` says the file is backed.
    pub(crate) pages: u64,
    pub(crate) perm: u16,
    pub(crate) mtime: SystemTime,
}

/// What a power cut threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose current content differed from their durable content.
    pub files_reverted: usize,
    /// Directories whose current entries differed from their durable entries.
    pub dirs_reverted: usize,
    /// Inodes no durable entry reached any more.
    pub inodes_lost: usize,
}

/// A failed operation, as the errno FUSE answers.
pub(crate) type Errno = i32;

/// The whole disk (see the module comment).
#[derive(Debug)]
pub(crate) struct Model {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty disk: a root directory, durable.
    pub(crate) fn new() -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                body: Body::Dir {
                    current: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        Model {
            nodes,
            next_ino: ROOT + 1,
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.node(dir)?.body {
            Body::Dir { current, .. } => Ok(current),
            Body::File { .. } => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        let node = self.node_mut(dir)?;
        node.mtime = SystemTime::now();
        match &mut node.body {
            Body::Dir { current, .. } => Ok(current),
            Body::File { .. } => Err(libc::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut Data, Errno> {
        let node = self.node_mut(ino)?;
        node.mtime = SystemTime::now();
        match &mut node.body {
            Body::File { current, .. } => Ok(current),
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    pub(crate) fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        let node = self.node(ino)?;
        let (kind, size, pages) = match &node.body {
            Body::File { current, .. } => (Kind::File, current.len, current.pages.len() as u64),
            Body::Dir { current, .. } => (Kind::Dir, current.len() as u64, 0),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            pages,
            perm: node.perm,
            mtime: node.mtime,
        })
    }

    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(libc::ENOENT)?;
        self.attr(ino)
    }

    /// Creates a file or directory `name` in `parent` (current entries only).
    pub(crate) fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        perm: u16,
    ) -> Result<Attr, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = match kind {
            Kind::File => Body::File {
                current: Data::default(),
                durable: Data::default(),
            },
            Kind::Dir => Body::Dir {
                current: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        };
        self.nodes.insert(
            ino,
            Node {
                body,
                perm,
                mtime: SystemTime::now(),
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.attr(ino)
    }

    /// Removes `name` from `parent`: a file (`want == File`) or an empty directory.
    pub(crate) fn remove(&mut self, parent: u64, name: &OsStr, want: Kind) -> Result<(), Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(libc::ENOENT)?;
        match (want, &self.node(ino)?.body) {
            (Kind::File, Body::Dir { .. }) => return Err(libc::EISDIR),
            (Kind::Dir, Body::File { .. }) => return Err(libc::ENOTDIR),
            (Kind::Dir, Body::Dir { current, .. }) if !current.is_empty() => {
                return Err(libc::ENOTEMPTY)
            }
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        Ok(())
    }

    /// Moves `name` of `parent` to `new_name` of `new_parent`, replacing a file there (or an
    /// empty directory by a directory). `no_replace`: fail with `EEXIST` instead.
    pub(crate) fn rename(
        &mut self,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = *self.entries(parent)?.get(name).ok_or(libc::ENOENT)?;
        let moving_dir = matches!(self.node(ino)?.body, Body::Dir { .. });
        if let Some(&target) = self.entries(new_parent)?.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            match (&self.node(target)?.body, moving_dir) {
                (Body::Dir { .. }, false) => return Err(libc::EISDIR),
                (Body::File { .. }, true) => return Err(libc::ENOTDIR),
                (Body::Dir { current, .. }, true) if !current.is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                _ => {}
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// Every current entry of `dir`, with its inode and kind.
    pub(crate) fn list(&self, dir: u64) -> Result<Vec<(OsString, u64, Kind)>, Errno> {
        self.entries(dir)?
            .iter()
            .map(|(name, &ino)| Ok((name.clone(), ino, self.attr(ino)?.kind)))
            .collect()
    }

    pub(crate) fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, Errno> {
        match &self.node(ino)?.body {
            Body::File { current, .. } => Ok(current.read(offset, size)),
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    pub(crate) fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        self.file_mut(ino)?.write(offset, bytes);
        Ok(())
    }

    pub(crate) fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        self.file_mut(ino)?.set_len(len);
        Ok(())
    }

    pub(crate) fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), Errno> {
        self.node_mut(ino)?.perm = perm;
        Ok(())
    }

    /// FSYNC of a file or FSYNCDIR of a directory: its current state becomes durable.
    pub(crate) fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File { current, durable } => *durable = current.clone(),
            Body::Dir { current, durable } => *durable = current.clone(),
        }
        Ok(())
    }

    /// The inode a path relative to the root names in the current tree.
    pub(crate) fn resolve(&self, path: &Path) -> Result<u64, Errno> {
        let mut ino = ROOT;
        for component in path.components() {
            match component {
                Component::Normal(name) => {
                    ino = *self.entries(ino)?.get(name).ok_or(libc::ENOENT)?
                }
                Component::CurDir => {}
                _ => return Err(libc::EINVAL),
            }
        }
        Ok(ino)
    }

    /// The durable bytes of the file at `path` (current tree): what a power cut would leave
    /// in that inode.
    pub(crate) fn durable_bytes(&self, path: &Path) -> Result<Vec<u8>, Errno> {
        match &self.node(self.resolve(path)?)?.body {
            Body::File { durable, .. } => Ok(durable.read(0, durable.len as usize)),
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    /// Drops every volatile change (see the module comment).
    pub(crate) fn power_cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        for node in self.nodes.values_mut() {
            match &mut node.body {
                Body::File { current, durable } => {
                    if current.len != durable.len || !same_pages(current, durable) {
                        report.files_reverted += 1;
                    }
                    *current = durable.clone();
                }
                Body::Dir { current, durable } => {
                    if current != durable {
                        report.dirs_reverted += 1;
                    }
                    *current = durable.clone();
                }
            }
        }
        // Keep what the durable entries reach from the root.
        let mut reached = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Node {
                body: Body::Dir { current, .. },
                ..
            }) = self.nodes.get(&ino)
            {
                for &child in current.values() {
                    if reached.insert(child) {
                        todo.push(child);
                    }
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|ino, _| reached.contains(ino));
        report.inodes_lost = before - self.nodes.len();
        report
    }

    /// [`Model::power_cut`] after the file at `path` (current tree) had its current bytes
    /// below `keep_below` written back: a power cut in the middle of that file's write-back.
    pub(crate) fn power_cut_torn(
        &mut self,
        path: &Path,
        keep_below: u64,
    ) -> Result<CutReport, Errno> {
        let ino = self.resolve(path)?;
        if let Body::File { current, durable } = &mut self.node_mut(ino)?.body {
            let kept = current.read(0, keep_below.min(current.len) as usize);
            durable.write(0, &kept);
        } else {
            return Err(libc::EISDIR);
        }
        Ok(self.power_cut())
    }
}

fn same_pages(a: &Data, b: &Data) -> bool {
    a.pages.len() == b.pages.len()
        && a.pages
            .iter()
            .zip(&b.pages)
            .all(|((ia, pa), (ib, pb))| ia == ib && (Arc::ptr_eq(pa, pb) || pa == pb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn unsynced_data_and_names_are_lost() {
        let mut m = Model::new();
        let dir = m.create(ROOT, name("d"), Kind::Dir, 0o755).unwrap().ino;
        let f = m.create(dir, name("f"), Kind::File, 0o644).unwrap().ino;
        m.write(f, 0, b"hello").unwrap();
        // The file's data is synced, but neither name is.
        m.sync(f).unwrap();
        let report = m.power_cut();
        assert_eq!(report.inodes_lost, 2);
        assert_eq!(m.lookup(ROOT, name("d")).err(), Some(libc::ENOENT));
    }

    #[test]
    fn synced_data_and_names_survive_and_later_writes_do_not() {
        let mut m = Model::new();
        let dir = m.create(ROOT, name("d"), Kind::Dir, 0o755).unwrap().ino;
        m.sync(ROOT).unwrap();
        let f = m.create(dir, name("f"), Kind::File, 0o644).unwrap().ino;
        m.sync(dir).unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.sync(f).unwrap();
        m.write(f, 3, b"LO world").unwrap();
        let g = m.create(dir, name("g"), Kind::File, 0o644).unwrap().ino;
        m.write(g, 0, b"gone").unwrap();
        m.sync(g).unwrap();
        let report = m.power_cut();
        assert_eq!(report.files_reverted, 1);
        assert_eq!(report.inodes_lost, 1);
        assert_eq!(m.read(f, 0, 100).unwrap(), b"hello");
        assert_eq!(m.lookup(dir, name("g")).err(), Some(libc::ENOENT));
    }

    #[test]
    fn rename_is_volatile_until_the_directory_is_synced() {
        let mut m = Model::new();
        let old = m.create(ROOT, name("a"), Kind::File, 0o644).unwrap().ino;
        m.write(old, 0, b"old").unwrap();
        m.sync(old).unwrap();
        m.sync(ROOT).unwrap();
        let new = m
            .create(ROOT, name("a.tmp"), Kind::File, 0o644)
            .unwrap()
            .ino;
        m.write(new, 0, b"new").unwrap();
        m.sync(new).unwrap();
        m.rename((ROOT, name("a.tmp")), (ROOT, name("a")), false)
            .unwrap();
        m.power_cut();
        let a = m.lookup(ROOT, name("a")).unwrap().ino;
        assert_eq!(m.read(a, 0, 10).unwrap(), b"old");
        // With the directory synced, the new content is there.
        let new = m
            .create(ROOT, name("a.tmp"), Kind::File, 0o644)
            .unwrap()
            .ino;
        m.write(new, 0, b"new").unwrap();
        m.sync(new).unwrap();
        m.rename((ROOT, name("a.tmp")), (ROOT, name("a")), false)
            .unwrap();
        m.sync(ROOT).unwrap();
        m.power_cut();
        let a = m.lookup(ROOT, name("a")).unwrap().ino;
        assert_eq!(m.read(a, 0, 10).unwrap(), b"new");
        assert_eq!(m.lookup(ROOT, name("a.tmp")).err(), Some(libc::ENOENT));
    }

    #[test]
    fn truncation_and_sparse_reads() {
        let mut m = Model::new();
        let f = m.create(ROOT, name("f"), Kind::File, 0o644).unwrap().ino;
        m.set_len(f, 3 * PAGE).unwrap();
        m.write(f, PAGE - 2, b"abcd").unwrap();
        assert_eq!(m.read(f, PAGE - 3, 6).unwrap(), b"\0abcd\0");
        m.set_len(f, PAGE).unwrap();
        m.set_len(f, 2 * PAGE).unwrap();
        assert_eq!(m.read(f, PAGE - 3, 6).unwrap(), b"\0ab\0\0\0");
        assert_eq!(m.attr(f).unwrap().size, 2 * PAGE);
    }

    #[test]
    fn torn_cut_keeps_a_prefix_of_one_file() {
        let mut m = Model::new();
        let f = m.create(ROOT, name("f"), Kind::File, 0o644).unwrap().ino;
        m.sync(ROOT).unwrap();
        m.write(f, 0, b"0123").unwrap();
        m.sync(f).unwrap();
        m.write(f, 4, b"456789").unwrap();
        m.power_cut_torn(Path::new("f"), 7).unwrap();
        assert_eq!(m.read(f, 0, 100).unwrap(), b"0123456");
        assert_eq!(m.durable_bytes(Path::new("f")).unwrap(), b"0123456");
    }
}
