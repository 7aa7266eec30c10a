//! The XDP program's aggregate tables (`flowtally_common::table`), mapped
//! into this process: a drain reads and frees a generation's slots in
//! place, without a syscall per key.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;
use flowtally_common::{
    agg::{AggKey, AggValue},
    table::{self, Slot, TableKey},
};

pub struct MappedTable<K> {
    /// Keeps the map, and so the mapping's pages, alive.
    _map: MapData,
    slots: NonNull<Slot<K>>,
    len: usize,
    /// Slots per generation.
    generation_slots: usize,
}

// SAFETY: the mapping is owned by this value and only touched through
// `&mut self`; the kernel writes only the generation not being drained.
unsafe impl<K> Send for MappedTable<K> {}

impl<K: TableKey> MappedTable<K> {
    /// Maps `map`, the table loaded with `shift` and `cpus` partitions.
    pub fn new(map: MapData, shift: u32, cpus: u32) -> io::Result<Self> {
        let entries = usize::try_from(table::entries(shift, cpus))
            .map_err(|_| io::Error::other("the aggregate table does not fit this address space"))?;
        let len = entries * size_of::<Slot<K>>();
        // SAFETY: a shared mapping of a `BPF_F_MMAPABLE` array's value area,
        // exactly its size; the kernel keeps the pages while it is mapped.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let slots = NonNull::new(addr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self {
            _map: map,
            slots,
            len,
            generation_slots: entries / 2,
        })
    }

    /// Hands every aggregate of `generation` to `sink` and frees its slots;
    /// returns how many there were. Call only while the program writes
    /// the other generation (after `ACTIVE` was switched and an RCU grace
    /// period passed).
    pub fn drain(&mut self, generation: u32, mut sink: impl FnMut(AggKey, &AggValue)) -> u64 {
        let first = generation as usize * self.generation_slots;
        let mut found = 0;
        for index in first..first + self.generation_slots {
            // SAFETY: in bounds of the mapping; nothing else accesses this
            // generation now (see above). Volatile: the memory is shared
            // with the kernel, which the compiler cannot see.
            unsafe {
                let slot = self.slots.as_ptr().add(index);
                let flows = std::ptr::addr_of!((*slot).flows).read_volatile();
                if flows == 0 {
                    continue;
                }
                let copy = slot.read_volatile();
                std::ptr::addr_of_mut!((*slot).flows).write_volatile(0);
                if let Some(value) = copy.value() {
                    sink(copy.key.full(), &value);
                    found += 1;
                }
            }
        }
        found
    }
}

impl<K> Drop for MappedTable<K> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), self.len) };
    }
}
