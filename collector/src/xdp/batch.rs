//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` on per-CPU hash maps, which aya 0.14
//! does not wrap: one `bpf()` call reads and deletes a whole batch of keys
//! with their per-CPU values, where per-key draining costs three calls per
//! key (next key, lookup, delete). Kernels before 5.6 lack the command;
//! [`drain`] then says [`BatchError::Unsupported`] before touching the map,
//! and the caller falls back to per-key operations.

use std::{io, mem::size_of, os::fd::AsRawFd as _, os::fd::BorrowedFd};

use aya::Pod;

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// The kernel's own "not supported" (not in libc: it never reaches
/// userspace from other syscalls).
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("this kernel has no BPF_MAP_LOOKUP_AND_DELETE_BATCH: {0}")]
    Unsupported(io::Error),
    #[error("BPF_MAP_LOOKUP_AND_DELETE_BATCH: {0}")]
    Failed(io::Error),
}

/// Reused buffers for one map's key and value layout.
pub struct Batcher {
    /// The `bpf()` command; another number stands in for a kernel that
    /// lacks this one ([`Batcher::unsupported`]).
    command: libc::c_long,
    /// Keys per call; grows when a hash bucket holds more (`ENOSPC`).
    capacity: usize,
    cpus: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl Batcher {
    /// Batches of `capacity` keys (at least 1) for a map whose values are
    /// per-CPU over `cpus` possible CPUs.
    pub fn new(capacity: usize, cpus: usize) -> Self {
        Self {
            command: BPF_MAP_LOOKUP_AND_DELETE_BATCH,
            capacity: capacity.max(1),
            cpus,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// A batcher that the kernel refuses as one without batch operations
    /// would (an unknown command, `EINVAL`): for tests of the fallback.
    pub fn unsupported(mut self) -> Self {
        self.command = libc::c_long::from(u16::MAX);
        self
    }

    /// Reads and deletes every key of the per-CPU hash map `map`, handing
    /// each key and its per-CPU values to `sink`; returns how many. Keys a
    /// concurrent writer adds meanwhile may or may not be among them (the
    /// drainer only drains maps nobody writes).
    pub fn drain<K: Pod, V: Pod>(
        &mut self,
        map: BorrowedFd<'_>,
        mut sink: impl FnMut(&K, &[V]),
    ) -> Result<u64, BatchError> {
        // Per-CPU values come 8-byte aligned per CPU (kernel's round_up).
        let value_stride = size_of::<V>().next_multiple_of(8);
        let mut per_cpu: Vec<V> = Vec::with_capacity(self.cpus);
        let mut cursor = 0u32;
        let mut first = true;
        let mut total = 0u64;
        loop {
            self.keys.resize(self.capacity * size_of::<K>(), 0);
            self.values
                .resize(self.capacity * self.cpus * value_stride, 0);
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    std::ptr::from_ref(&cursor) as u64
                },
                out_batch: std::ptr::from_mut(&mut cursor) as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: self.capacity as u32,
                map_fd: map.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // SAFETY: `attr` is a valid bpf_attr batch prefix; `keys` and
            // `values` have room for `count` keys and their per-CPU values,
            // `cursor` for the hash map's 4-byte batch token.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    self.command,
                    std::ptr::from_mut(&mut attr),
                    size_of::<BatchAttr>(),
                )
            };
            let error = (rc < 0).then(io::Error::last_os_error);
            let errno = error.as_ref().and_then(io::Error::raw_os_error);
            if first && let Some(errno @ (libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)) = errno {
                return Err(BatchError::Unsupported(io::Error::from_raw_os_error(errno)));
            }
            if errno == Some(libc::ENOSPC) && attr.count == 0 {
                // A bucket holds more keys than one batch: retry larger.
                self.capacity *= 2;
                continue;
            }
            let done = errno == Some(libc::ENOENT);
            if let Some(error) = error.filter(|_| !done) {
                return Err(BatchError::Failed(error));
            }
            for i in 0..attr.count as usize {
                // SAFETY (both reads): within the buffers, which hold
                // `count` keys and values as the kernel wrote them; `Pod`
                // types are valid for any bytes, read unaligned.
                let key: K = unsafe {
                    std::ptr::read_unaligned(self.keys.as_ptr().add(i * size_of::<K>()).cast())
                };
                per_cpu.clear();
                for cpu in 0..self.cpus {
                    let at = (i * self.cpus + cpu) * value_stride;
                    per_cpu.push(unsafe {
                        std::ptr::read_unaligned(self.values.as_ptr().add(at).cast())
                    });
                }
                sink(&key, &per_cpu);
            }
            total += u64::from(attr.count);
            first = false;
            if done {
                return Ok(total);
            }
        }
    }
}
