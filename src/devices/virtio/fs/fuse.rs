//! The FUSE wire protocol (include/uapi/linux/fuse.h): opcodes, flags and
//! `#[repr(C)]` structures, decoded from and encoded to little-endian bytes
//! field by field, so untrusted bytes are never reinterpreted in place.

/// The protocol major version we speak.
pub const KERNEL_VERSION: u32 = 7;
/// The highest minor version we implement; the reply carries
/// min(guest's, this).
pub const KERNEL_MINOR_VERSION: u32 = 38;
/// The oldest minor version we serve (the 7.12 argument layouts).
pub const MIN_MINOR_VERSION: u32 = 12;
/// Below this minor version fuse_init_out is its 24-byte compat form.
pub const MINOR_INIT_OUT_FULL: u32 = 23;
/// Size of fuse_init_out for minors 5 to 22.
pub const COMPAT_22_INIT_OUT_SIZE: usize = 24;

/// The node ID of the root inode.
pub const ROOT_ID: u64 = 1;

// Opcodes.
pub const LOOKUP: u32 = 1;
pub const FORGET: u32 = 2;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const READLINK: u32 = 5;
pub const SYMLINK: u32 = 6;
pub const MKNOD: u32 = 8;
pub const MKDIR: u32 = 9;
pub const UNLINK: u32 = 10;
pub const RMDIR: u32 = 11;
pub const RENAME: u32 = 12;
pub const LINK: u32 = 13;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const SETXATTR: u32 = 21;
pub const GETXATTR: u32 = 22;
pub const LISTXATTR: u32 = 23;
pub const REMOVEXATTR: u32 = 24;
pub const FLUSH: u32 = 25;
pub const INIT: u32 = 26;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const FSYNCDIR: u32 = 30;
pub const GETLK: u32 = 31;
pub const SETLK: u32 = 32;
pub const SETLKW: u32 = 33;
pub const ACCESS: u32 = 34;
pub const CREATE: u32 = 35;
pub const INTERRUPT: u32 = 36;
pub const BMAP: u32 = 37;
pub const DESTROY: u32 = 38;
pub const IOCTL: u32 = 39;
pub const POLL: u32 = 40;
pub const NOTIFY_REPLY: u32 = 41;
pub const BATCH_FORGET: u32 = 42;
pub const FALLOCATE: u32 = 43;
pub const READDIRPLUS: u32 = 44;
pub const RENAME2: u32 = 45;
pub const LSEEK: u32 = 46;
pub const COPY_FILE_RANGE: u32 = 47;
pub const SETUPMAPPING: u32 = 48;
pub const REMOVEMAPPING: u32 = 49;
pub const SYNCFS: u32 = 50;
pub const TMPFILE: u32 = 51;
pub const STATX: u32 = 52;

// fuse_setattr_in.valid bits.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
pub const FATTR_LOCKOWNER: u32 = 1 << 9;
pub const FATTR_CTIME: u32 = 1 << 10;
pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;

// fuse_open_out.open_flags bits.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;

// INIT flags (bits 32..63 travel in flags2 when FUSE_INIT_EXT is set).
pub const ASYNC_READ: u64 = 1 << 0;
pub const POSIX_LOCKS: u64 = 1 << 1;
pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
pub const EXPORT_SUPPORT: u64 = 1 << 4;
pub const BIG_WRITES: u64 = 1 << 5;
pub const DONT_MASK: u64 = 1 << 6;
pub const FLOCK_LOCKS: u64 = 1 << 10;
pub const AUTO_INVAL_DATA: u64 = 1 << 12;
pub const DO_READDIRPLUS: u64 = 1 << 13;
pub const READDIRPLUS_AUTO: u64 = 1 << 14;
pub const ASYNC_DIO: u64 = 1 << 15;
pub const WRITEBACK_CACHE: u64 = 1 << 16;
pub const PARALLEL_DIROPS: u64 = 1 << 18;
pub const HANDLE_KILLPRIV: u64 = 1 << 19;
pub const POSIX_ACL: u64 = 1 << 20;
pub const MAX_PAGES: u64 = 1 << 22;
pub const SUBMOUNTS: u64 = 1 << 27;
pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
pub const SETXATTR_EXT: u64 = 1 << 29;
pub const INIT_EXT: u64 = 1 << 30;
pub const SECURITY_CTX: u64 = 1 << 32;
pub const HAS_INODE_DAX: u64 = 1 << 33;
pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
/// 7.39: the guest may mmap files opened with FOPEN_DIRECT_IO. The kernel
/// honours it whatever minor version the reply names.
pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;

// Request flags.
pub const GETATTR_FH: u32 = 1 << 0;
pub const FSYNC_FDATASYNC: u32 = 1 << 0;
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;

// RENAME2 flags (as renameat2).
pub const RENAME_NOREPLACE: u32 = 1 << 0;
pub const RENAME_EXCHANGE: u32 = 1 << 1;
pub const RENAME_WHITEOUT: u32 = 1 << 2;

/// A fixed-size little-endian wire value.
pub trait Wire: Sized {
    /// Its size on the wire, equal to its `#[repr(C)]` size.
    const SIZE: usize;
    /// Decodes from the first `SIZE` bytes of `bytes`; None if too short.
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Appends the `SIZE` encoded bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The encoded bytes as a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::SIZE);
        self.encode(&mut out);
        out
    }
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn decode(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.get(..Self::SIZE)?.try_into().ok()?))
            }
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
wire_int!(u16, u32, u64, i32, i64);

impl<T: Wire + Copy + Default, const N: usize> Wire for [T; N] {
    const SIZE: usize = T::SIZE * N;
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut out = [T::default(); N];
        for (i, v) in out.iter_mut().enumerate() {
            *v = T::decode(bytes.get(i * T::SIZE..)?)?;
        }
        Some(out)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            v.encode(out);
        }
    }
}

/// Declares a `#[repr(C)]` FUSE structure with its [`Wire`] coding, and
/// checks at compile time that the wire size is the in-memory size (the
/// fields are in C order with no hidden padding).
macro_rules! wire_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $(pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $(pub $field: $ty,)* }

        impl Wire for $name {
            const SIZE: usize = 0 $(+ <$ty as Wire>::SIZE)*;
            #[allow(unused_assignments)]
            fn decode(bytes: &[u8]) -> Option<Self> {
                if bytes.len() < Self::SIZE {
                    return None;
                }
                let mut at = 0usize;
                $(
                    let $field = <$ty as Wire>::decode(&bytes[at..])?;
                    at += <$ty as Wire>::SIZE;
                )*
                Some($name { $($field,)* })
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$field.encode(out);)*
            }
        }

        const _: () = assert!(<$name as Wire>::SIZE == std::mem::size_of::<$name>());
    };
}

wire_struct! {
    /// fuse_in_header: the start of every request.
    pub struct InHeader {
        pub len: u32,
        pub opcode: u32,
        pub unique: u64,
        pub nodeid: u64,
        pub uid: u32,
        pub gid: u32,
        pub pid: u32,
        pub total_extlen: u16,
        pub padding: u16,
    }
}

wire_struct! {
    /// fuse_out_header: the start of every reply; `error` is 0 or -errno.
    pub struct OutHeader {
        pub len: u32,
        pub error: i32,
        pub unique: u64,
    }
}

wire_struct! {
    /// fuse_attr.
    pub struct Attr {
        pub ino: u64,
        pub size: u64,
        pub blocks: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub nlink: u32,
        pub uid: u32,
        pub gid: u32,
        pub rdev: u32,
        pub blksize: u32,
        pub flags: u32,
    }
}

wire_struct! {
    /// fuse_kstatfs (the body of fuse_statfs_out).
    pub struct Kstatfs {
        pub blocks: u64,
        pub bfree: u64,
        pub bavail: u64,
        pub files: u64,
        pub ffree: u64,
        pub bsize: u32,
        pub namelen: u32,
        pub frsize: u32,
        pub padding: u32,
        pub spare: [u32; 6],
    }
}

wire_struct! {
    /// fuse_entry_out: the reply to LOOKUP and to every op creating a name.
    pub struct EntryOut {
        pub nodeid: u64,
        pub generation: u64,
        pub entry_valid: u64,
        pub attr_valid: u64,
        pub entry_valid_nsec: u32,
        pub attr_valid_nsec: u32,
        pub attr: Attr,
    }
}

wire_struct! {
    /// fuse_forget_in.
    pub struct ForgetIn {
        pub nlookup: u64,
    }
}

wire_struct! {
    /// fuse_forget_one: one item of BATCH_FORGET.
    pub struct ForgetOne {
        pub nodeid: u64,
        pub nlookup: u64,
    }
}

wire_struct! {
    /// fuse_batch_forget_in, followed by `count` [`ForgetOne`].
    pub struct BatchForgetIn {
        pub count: u32,
        pub dummy: u32,
    }
}

wire_struct! {
    /// fuse_getattr_in.
    pub struct GetattrIn {
        pub getattr_flags: u32,
        pub dummy: u32,
        pub fh: u64,
    }
}

wire_struct! {
    /// fuse_attr_out.
    pub struct AttrOut {
        pub attr_valid: u64,
        pub attr_valid_nsec: u32,
        pub dummy: u32,
        pub attr: Attr,
    }
}

wire_struct! {
    /// fuse_mknod_in, followed by the name.
    pub struct MknodIn {
        pub mode: u32,
        pub rdev: u32,
        pub umask: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_mkdir_in, followed by the name.
    pub struct MkdirIn {
        pub mode: u32,
        pub umask: u32,
    }
}

wire_struct! {
    /// fuse_rename_in, followed by the old and the new name.
    pub struct RenameIn {
        pub newdir: u64,
    }
}

wire_struct! {
    /// fuse_rename2_in, followed by the old and the new name.
    pub struct Rename2In {
        pub newdir: u64,
        pub flags: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_link_in, followed by the new name.
    pub struct LinkIn {
        pub oldnodeid: u64,
    }
}

wire_struct! {
    /// fuse_setattr_in.
    pub struct SetattrIn {
        pub valid: u32,
        pub padding: u32,
        pub fh: u64,
        pub size: u64,
        pub lock_owner: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub unused4: u32,
        pub uid: u32,
        pub gid: u32,
        pub unused5: u32,
    }
}

wire_struct! {
    /// fuse_open_in (OPEN and OPENDIR).
    pub struct OpenIn {
        pub flags: u32,
        pub open_flags: u32,
    }
}

wire_struct! {
    /// fuse_create_in, followed by the name.
    pub struct CreateIn {
        pub flags: u32,
        pub mode: u32,
        pub umask: u32,
        pub open_flags: u32,
    }
}

wire_struct! {
    /// fuse_open_out.
    pub struct OpenOut {
        pub fh: u64,
        pub open_flags: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_release_in (RELEASE and RELEASEDIR).
    pub struct ReleaseIn {
        pub fh: u64,
        pub flags: u32,
        pub release_flags: u32,
        pub lock_owner: u64,
    }
}

wire_struct! {
    /// fuse_flush_in.
    pub struct FlushIn {
        pub fh: u64,
        pub unused: u32,
        pub padding: u32,
        pub lock_owner: u64,
    }
}

wire_struct! {
    /// fuse_read_in (READ, READDIR, READDIRPLUS).
    pub struct ReadIn {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub read_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_write_in, followed by `size` bytes of data.
    pub struct WriteIn {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub write_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_write_out.
    pub struct WriteOut {
        pub size: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_fsync_in (FSYNC and FSYNCDIR).
    pub struct FsyncIn {
        pub fh: u64,
        pub fsync_flags: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// The fuse_setxattr_in a guest sends without FUSE_SETXATTR_EXT
    /// (FUSE_COMPAT_SETXATTR_IN_SIZE), followed by the name and the value.
    pub struct SetxattrIn {
        pub size: u32,
        pub flags: u32,
    }
}

wire_struct! {
    /// fuse_getxattr_in (GETXATTR, followed by the name; LISTXATTR).
    pub struct GetxattrIn {
        pub size: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_getxattr_out: the needed size, when the request's size is 0.
    pub struct GetxattrOut {
        pub size: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_access_in.
    pub struct AccessIn {
        pub mask: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// The first fields of fuse_init_in, which every version sends.
    pub struct InitInCompat {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
    }
}

wire_struct! {
    /// fuse_init_in as sent with FUSE_INIT_EXT.
    pub struct InitIn {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub flags2: u32,
        pub unused: [u32; 11],
    }
}

wire_struct! {
    /// fuse_init_out.
    pub struct InitOut {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub max_background: u16,
        pub congestion_threshold: u16,
        pub max_write: u32,
        pub time_gran: u32,
        pub max_pages: u16,
        pub map_alignment: u16,
        pub flags2: u32,
        pub unused: [u32; 7],
    }
}

wire_struct! {
    /// fuse_fallocate_in.
    pub struct FallocateIn {
        pub fh: u64,
        pub offset: u64,
        pub length: u64,
        pub mode: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_lseek_in.
    pub struct LseekIn {
        pub fh: u64,
        pub offset: u64,
        pub whence: u32,
        pub padding: u32,
    }
}

wire_struct! {
    /// fuse_lseek_out.
    pub struct LseekOut {
        pub offset: u64,
    }
}

wire_struct! {
    /// fuse_statfs_out.
    pub struct StatfsOut {
        pub st: Kstatfs,
    }
}

wire_struct! {
    /// The fixed part of fuse_dirent; `namelen` name bytes follow, then
    /// zero padding to a multiple of 8.
    pub struct Dirent {
        pub ino: u64,
        pub off: u64,
        pub namelen: u32,
        pub typ: u32,
    }
}

/// A record length rounded up to the 8-byte FUSE_REC_ALIGN.
pub fn rec_align(len: usize) -> usize {
    (len + 7) & !7
}

/// The size of one READDIR record for a name of `namelen` bytes.
pub fn dirent_size(namelen: usize) -> usize {
    rec_align(Dirent::SIZE + namelen)
}

/// The size of one READDIRPLUS record (fuse_direntplus) for a name of
/// `namelen` bytes.
pub fn direntplus_size(namelen: usize) -> usize {
    rec_align(EntryOut::SIZE + Dirent::SIZE + namelen)
}

/// Appends one fuse_dirent with its name and alignment padding.
pub fn push_dirent(out: &mut Vec<u8>, ino: u64, off: u64, typ: u32, name: &[u8]) {
    let start = out.len();
    Dirent {
        ino,
        off,
        namelen: name.len() as u32,
        typ,
    }
    .encode(out);
    out.extend_from_slice(name);
    out.resize(start + dirent_size(name.len()), 0);
}

/// A cursor over the argument bytes of one request.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// The next wire value.
    pub fn read<T: Wire>(&mut self) -> Option<T> {
        let v = T::decode(self.buf)?;
        self.buf = &self.buf[T::SIZE..];
        Some(v)
    }

    /// The next NUL-terminated string, without its NUL; None when no NUL
    /// is left.
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.buf.iter().position(|&b| b == 0)?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Some(s)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
}
