//! Waits until every XDP program run that started before the call has
//! finished, using a guarantee the kernel gives for map-in-map updates:
//! updating an `ARRAY_OF_MAPS` calls `synchronize_rcu()` before the syscall
//! returns (kernel/bpf/syscall.c, `maybe_wait_bpf_programs`), and XDP
//! programs run inside RCU read-side sections. The map exists only for this;
//! no program reads it.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel
/// treats the omitted tail as zero.
#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[derive(Debug)]
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    /// `inner` is any map; it only has to stay valid as the array's element.
    pub fn new(inner: BorrowedFd<'_>) -> io::Result<Self> {
        let inner = inner.try_clone_to_owned()?;
        let fd = bpf(
            BPF_MAP_CREATE,
            &MapCreate {
                map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
                key_size: 4,
                value_size: 4,
                max_entries: 1,
                map_flags: 0,
                inner_map_fd: inner.as_raw_fd() as u32,
            },
        )?;
        // SAFETY: BPF_MAP_CREATE returned a new fd that nothing else owns.
        let outer = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { outer, inner })
    }

    /// Returns once all XDP runs in flight at the call have completed.
    pub fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = self.inner.as_raw_fd() as u32;
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &MapUpdate {
                map_fd: self.outer.as_raw_fd() as u32,
                _pad: 0,
                key: std::ptr::from_ref(&key) as u64,
                value: std::ptr::from_ref(&value) as u64,
                flags: 0,
            },
        )?;
        Ok(())
    }
}
