//! Thin, safe wrappers over the raw Linux syscalls the appliance needs that `std` does not offer:
//! `openat2` with `RESOLVE_BENEATH`, `sendfile`, `send` with `MSG_MORE`, a read-only `mmap` of a
//! file with a gathered `sendmsg` from it, `epoll`, `pipe2`, `splice`, `cachestat`, `statvfs`,
//! `localtime_r`, `setpriority` and a seccomp filter forbidding io_uring (tests of the
//! fallback). This module and [`super::uring`] are the only places with `unsafe`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cvt(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Opens `rel` (a relative path) read-only beneath the directory `dir`. The kernel refuses any
/// resolution that would leave `dir` (`..`, absolute symlinks, symlinks pointing outside, magic
/// links), so nothing outside a cache root can ever be opened whatever the request path.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &str) -> io::Result<File> {
    if rel.is_empty() || rel.starts_with('/') || rel.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "relative path without NUL required",
        ));
    }
    let c = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut how: libc::open_how = open_how_zeroed();
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call, `how` is a valid
    // `open_how` whose size we pass, and `dir` is an open descriptor borrowed for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = cvt(fd)? as RawFd;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn open_how_zeroed() -> libc::open_how {
    // SAFETY: `open_how` is a plain C struct of integers, for which all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `sendfile(2)`: copies up to `count` bytes from `file` at `*offset` to `sock` inside the kernel
/// and advances `*offset`.
pub fn sendfile(
    sock: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut off = *offset as libc::off_t;
    // SAFETY: both descriptors are open for the call; `off` is a valid, exclusive pointer.
    let r = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
    let n = cvt(r as libc::c_long)?;
    *offset = off as u64;
    Ok(n)
}

/// `cachestat(2)`'s system call number (Linux >= 6.5; the same on every architecture).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

fn page_size() -> u64 {
    use std::sync::OnceLock;
    static PAGE: OnceLock<u64> = OnceLock::new();
    // SAFETY: `sysconf` with a valid name has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

/// Whether every page of `file`'s bytes `[offset, offset + len)` is in the page cache
/// (`cachestat(2)`), so that a `sendfile` of that range copies from memory and never waits on
/// the disk. The range must lie within the file. `Err` when the kernel lacks `cachestat`
/// (`ENOSYS`, before 6.5) or refuses it.
pub fn resident(file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let page = page_size();
    let pages = (offset + len - 1) / page - offset / page + 1;
    let range = CachestatRange { off: offset, len };
    let mut st = Cachestat::default();
    // SAFETY: `range` and `st` are valid, properly laid out (`repr(C)`, the kernel's
    // `cachestat_range` and `cachestat`) and exclusive for the call; the descriptor is open.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut st as *mut Cachestat,
            0u32,
        )
    };
    cvt(r)?;
    Ok(st.nr_cache >= pages)
}

/// Drops `file`'s clean pages from the page cache (`posix_fadvise(DONTNEED)`), to test and
/// measure reads from a cold cache.
pub fn drop_cached(file: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain call on an open descriptor.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// `send(2)` with `MSG_NOSIGNAL`, plus `MSG_MORE` when more data follows immediately (so a
/// response head and the start of its file leave in full packets).
pub fn send(sock: BorrowedFd<'_>, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `buf` is a valid readable slice for its length; the descriptor is open.
    let r = unsafe { libc::send(sock.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
    cvt(r as libc::c_long)
}

/// A read-only shared mapping of a whole file (`mmap(2)`, `PROT_READ`, `MAP_SHARED`), unmapped
/// on drop. Its bytes are never read in user space: [`send_head_and_mapped`] hands their
/// addresses to the kernel, which copies them into the socket. A page that cannot be read (the
/// file truncated, a disk error on a page evicted after the caller checked residency) then
/// fails that call with `EFAULT` instead of raising `SIGBUS` in the process: the kernel's copy
/// from user memory takes the fault and returns an error.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and only its address is shared (handed to the kernel);
// munmap in `Drop` runs once, when the last owner lets go.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` gives out no access to the bytes in user space.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (its size); `len` must be non-zero.
    pub fn new(file: BorrowedFd<'_>, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh read-only shared mapping chosen by the kernel (null hint); `file` is an
        // open descriptor for the call. No Rust reference to the mapped bytes is ever made.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned and are unmapped only here.
        unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// One `sendmsg(2)` (`MSG_NOSIGNAL`) of `head` followed by bytes `offset..offset + len` of
/// `map`: a response head and a small file range leave in one call, so the kernel packs them
/// into the fewest segments. The kernel copies the file bytes from the page cache through the
/// mapping; a page not resident is read from disk in this call (callers check residency first)
/// and an unreadable one fails it with `EFAULT`. Returns the bytes sent (possibly fewer).
pub fn send_head_and_mapped(
    sock: BorrowedFd<'_>,
    head: &[u8],
    map: &Mapping,
    offset: u64,
    len: u64,
) -> io::Result<usize> {
    let end = offset.checked_add(len);
    if end.is_none_or(|e| e > map.len as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range outside the mapped file",
        ));
    }
    // SAFETY: `offset + len <= map.len` (checked above), so the pointer stays inside the
    // mapping; only the address is computed, nothing is dereferenced here.
    let body = unsafe { map.ptr.as_ptr().cast::<u8>().add(offset as usize) };
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.cast(),
            iov_len: len as usize,
        },
    ];
    // SAFETY: `msghdr` is a plain C struct for which all-zero is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: both iovecs point at readable memory for their lengths for the whole call (`head`
    // is borrowed, the mapping outlives the borrow of `map`); the kernel only reads them.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    cvt(r as libc::c_long)
}

/// `recv(2)` into `buf`.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice for its length; the descriptor is open.
    let r = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    cvt(r as libc::c_long)
}

/// Bytes and health of the file system holding `path`: `(total bytes, available bytes)`.
pub fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all-zero is a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and lives for the call; `st` is a valid exclusive pointer.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    cvt(r as libc::c_long)?;
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// Offset of local time from UTC at Unix time `unix_secs`, in seconds (`localtime_r`, which
/// reads `TZ` and `/etc/localtime`). 0 when the conversion fails.
pub fn local_utc_offset_secs(unix_secs: i64) -> i64 {
    let t: libc::time_t = unix_secs as libc::time_t;
    // SAFETY: all-zero is a valid `tm` (integers and a null `tm_zone` pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `t` and `tm` are valid pointers for the call; `localtime_r` is thread-safe and
    // writes only into `tm`.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

/// Sets the calling thread's nice value (Linux schedules threads individually, so this lowers
/// or raises only this thread's CPU share).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: `gettid` has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain integer arguments; `PRIO_PROCESS` with a thread id targets that thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    cvt(r as libc::c_long).map(|_| ())
}

/// The calling thread's CPU affinity mask.
pub fn current_affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: all-zero is a valid `cpu_set_t` (a bit array).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid exclusive pointer of the size we pass; pid 0 is this thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    cvt(r as libc::c_long)?;
    Ok(set)
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// Readable.
pub const EV_IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
/// Hang-up or error.
pub const EV_ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;

/// One readiness event: `(token, events)`.
pub type Event = (u64, u32);

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let fd = cvt(fd as libc::c_long)? as RawFd;
        // SAFETY: fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid pointer for the call; both descriptors are open.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        cvt(r as libc::c_long).map(|_| ())
    }

    /// Registers `fd` (level-triggered) for `events` under `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Changes the events of a registered `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Removes `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` and appends ready events to `out` (cleared first).
    pub fn wait(&self, out: &mut Vec<Event>, max: usize, timeout_ms: i32) -> io::Result<()> {
        const CAP: usize = 256;
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; CAP];
        let max = max.clamp(1, CAP);
        // SAFETY: `raw` has room for `raw.len()` events and outlives the call.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                raw.as_mut_ptr(),
                max as libc::c_int,
                timeout_ms,
            )
        };
        out.clear();
        match cvt(r as libc::c_long) {
            Ok(n) => {
                for ev in &raw[..n] {
                    let (token, events) = ({ ev.u64 }, { ev.events });
                    out.push((token, events));
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A pipe pair (read end, write end), non-blocking, close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors the kernel writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    cvt(r as libc::c_long)?;
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets a pipe's capacity (`F_SETPIPE_SZ`); returns the capacity granted.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    // SAFETY: plain fcntl on an open descriptor.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    cvt(r as libc::c_long)
}

/// The audit architecture a seccomp filter checks before trusting a syscall number.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Forbids `io_uring_setup(2)` to every thread of this process, for good: from now on it fails
/// with `EPERM`, as under a container runtime's seccomp profile or `kernel.io_uring_disabled=2`.
/// A seccomp filter (with `PR_SET_NO_NEW_PRIVS`, no privilege needed) synchronised to all
/// threads (`SECCOMP_FILTER_FLAG_TSYNC`). For tests of the automatic fallback to epoll: it
/// cannot be undone, so call it only in a process of its own.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn forbid_io_uring() -> io::Result<()> {
    use libc::{sock_filter, sock_fprog};
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code: u16, k: u32| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    };
    // struct seccomp_data { int nr; __u32 arch; ... }: nr at offset 0, arch at 4.
    let mut prog = [
        stmt(LD_W_ABS, 4),
        jump(AUDIT_ARCH, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(LD_W_ABS, 0),
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    cvt(r as libc::c_long)?;
    // SAFETY: `fprog` points at `prog`, both alive for the call; the kernel copies the program.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const sock_fprog,
        )
    };
    cvt(r)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    #[test]
    fn cachestat_sees_cold_and_warm_pages() {
        use std::io::Write as _;
        // Beside the sources (a disk file system; /tmp may be tmpfs, whose pages cannot drop).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        match resident(f.as_fd(), 0, 1 << 20) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return, // kernel < 6.5
            r => assert!(r.unwrap(), "freshly written pages are cached"),
        }
        drop_cached(f.as_fd()).unwrap();
        assert!(!resident(f.as_fd(), 0, 1 << 20).unwrap(), "dropped pages");
        let mut buf = vec![0u8; 8192];
        use std::os::unix::fs::FileExt as _;
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert!(resident(f.as_fd(), 4096, 8192).unwrap(), "pages just read");
        assert!(resident(f.as_fd(), 5000, 10).unwrap(), "unaligned range");
    }

    #[test]
    fn open_beneath_refuses_escapes() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::fs::create_dir(root.path().join("t")).unwrap();
        std::fs::write(root.path().join("t/ok"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("t/link"))
            .unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", root.path().join("t/rel")).unwrap();
        let dir = File::open(root.path()).unwrap();
        assert!(open_beneath(dir.as_fd(), "t/ok").is_ok());
        for bad in [
            "../x",
            "t/../../etc/passwd",
            "/etc/passwd",
            "t/link",
            "t/rel",
            "",
        ] {
            assert!(open_beneath(dir.as_fd(), bad).is_err(), "{bad} opened");
        }
    }
}
