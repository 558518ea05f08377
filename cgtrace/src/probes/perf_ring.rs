//! One CPU's perf event buffer for BPF output, opened and read here rather than through aya.
//!
//! aya 0.14 opens its perf buffers with `wakeup_events = 1`: for every record the kernel queues
//! a wake-up (an irq_work, which is a self-IPI and under virtualisation a VM exit) whether or not
//! anyone waits. cgtrace drains the perf buffers on a timer and never waits on them, so these are
//! opened with a byte watermark instead (`watermark = 1`, `wakeup_watermark`): a wake-up is
//! queued only once that many bytes wait.
//!
//! The buffer is the kernel's perf ring: a header page (`struct perf_event_mmap_page`: the
//! kernel's `data_head`, our `data_tail`) and a power-of-two number of data pages holding
//! 8-byte-aligned records, each a `struct perf_event_header` (type, misc, size) and its body.
//! `PERF_RECORD_SAMPLE` carries the program's bytes (`u32` size, then the bytes; they may wrap
//! around the end of the data area), `PERF_RECORD_LOST` the number of records the kernel dropped.
use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    ptr,
    sync::atomic::{AtomicU64, Ordering},
};

use aya_obj::generated::{
    PERF_EVENT_IOC_ENABLE, PERF_FLAG_FD_CLOEXEC, perf_event_attr, perf_event_mmap_page,
    perf_event_sample_format::PERF_SAMPLE_RAW, perf_event_type,
    perf_sw_ids::PERF_COUNT_SW_BPF_OUTPUT, perf_type_id::PERF_TYPE_SOFTWARE,
};

/// One record read from the buffer.
pub enum PerfRecord<'a> {
    /// A program's bytes, in up to two pieces (when they wrap around the data area).
    Sample { head: &'a [u8], tail: &'a [u8] },
    /// The kernel dropped this many records (the buffer was full).
    Lost(u64),
}

/// A perf event buffer of one CPU, mapped.
pub struct PerfRing {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    data_off: usize,
    data_size: usize,
}

impl PerfRing {
    /// Opens the BPF-output perf event of `cpu` with `pages` data pages (a power of two) of
    /// `page_size` bytes, waking a waiter once `watermark` bytes wait, and maps its buffer.
    pub fn open(cpu: u32, pages: usize, page_size: usize, watermark: u32) -> io::Result<PerfRing> {
        // SAFETY: a plain C struct of integers and unions of integers: all zeroes is valid (and
        // is the kernel's "not set" for every field).
        let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = PERF_TYPE_SOFTWARE as u32;
        attr.size = size_of::<perf_event_attr>() as u32;
        attr.config = PERF_COUNT_SW_BPF_OUTPUT as u64;
        attr.sample_type = PERF_SAMPLE_RAW as u64;
        attr.__bindgen_anon_1.sample_period = 1;
        attr.set_watermark(1);
        attr.__bindgen_anon_2.wakeup_watermark = watermark;
        // SAFETY: perf_event_open(2) with a valid attribute struct that outlives the call; pid
        // -1 with a cpu: every task on that CPU; no group.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                ptr::from_ref(&attr),
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                libc::c_ulong::from(PERF_FLAG_FD_CLOEXEC),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor the call just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let map_len = (pages + 1) * page_size;
        // SAFETY: maps the event's buffer (header page and data pages) shared with the kernel;
        // the length is what perf requires (1 + 2^n pages).
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = PerfRing {
            fd,
            base: base.cast(),
            map_len,
            data_off: page_size,
            data_size: pages * page_size,
        };
        // Kernels since 4.1 say where the data area is; older ones put it after the header page.
        let page = ring.base.cast::<perf_event_mmap_page>();
        // SAFETY: the header page is mapped and these two fields are written once, at mmap.
        let (off, size) = unsafe {
            (
                ptr::read_volatile(ptr::addr_of!((*page).data_offset)),
                ptr::read_volatile(ptr::addr_of!((*page).data_size)),
            )
        };
        if size != 0 && size.is_power_of_two() && off as usize + size as usize <= map_len {
            ring.data_off = off as usize;
            ring.data_size = size as usize;
        }
        // SAFETY: an ioctl without argument on our own perf event descriptor.
        if unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ring)
    }

    /// The perf event, to put in the programs' perf event array.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn head_and_tail(&self) -> (&AtomicU64, &AtomicU64) {
        let page = self.base.cast::<perf_event_mmap_page>();
        // SAFETY: the header page stays mapped while `self` lives; `data_head` (the kernel's)
        // and `data_tail` (ours) are aligned u64s that both sides access atomically.
        unsafe {
            (
                AtomicU64::from_ptr(ptr::addr_of_mut!((*page).data_head)),
                AtomicU64::from_ptr(ptr::addr_of_mut!((*page).data_tail)),
            )
        }
    }

    /// `len` bytes of the data area from the stream position `pos`, in up to two pieces.
    ///
    /// # Safety
    /// `[pos, pos + len)` lies between `data_tail` and `data_head`: written by the kernel,
    /// and not written again until `data_tail` moves past it.
    unsafe fn bytes(&self, pos: u64, len: usize) -> (&[u8], &[u8]) {
        let at = (pos as usize) & (self.data_size - 1);
        let first = len.min(self.data_size - at);
        // SAFETY: both pieces are inside the mapped data area; the caller's promise makes
        // them stable while borrowed.
        unsafe {
            let data = self.base.add(self.data_off);
            (
                std::slice::from_raw_parts(data.add(at), first),
                std::slice::from_raw_parts(data, len - first),
            )
        }
    }

    /// Hands every record the kernel has written to `f`, then gives their room back. Returns
    /// how many records there were.
    pub fn read(&mut self, mut f: impl FnMut(PerfRecord<'_>)) -> usize {
        let (head_at, tail_at) = self.head_and_tail();
        // Acquire: the records before `data_head` are visible once it is.
        let head = head_at.load(Ordering::Acquire);
        let mut tail = tail_at.load(Ordering::Relaxed);
        let mut n = 0;
        while tail < head {
            // SAFETY: a header lies at `tail` (records are 8-byte aligned and the data area a
            // power of two of pages, so it never wraps), below `head`.
            let (hdr, _) = unsafe { self.bytes(tail, 8) };
            let kind = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let size = u16::from_ne_bytes([hdr[6], hdr[7]]) as u64;
            if size < 8 || tail + size > head {
                // Not a record: give the rest back rather than spin on it.
                log::warn!("perf buffer: a record of {size} bytes at {tail} (head {head})");
                tail = head;
                break;
            }
            let body_len = size as usize - 8;
            // SAFETY: the record's body follows its header, below `head`.
            let (b1, b2) = unsafe { self.bytes(tail + 8, body_len) };
            let byte = |j: usize| -> u8 {
                if j < b1.len() {
                    b1[j]
                } else {
                    b2.get(j - b1.len()).copied().unwrap_or(0)
                }
            };
            let word = |i: usize| u64::from_ne_bytes(std::array::from_fn(|k| byte(i + k)));
            if kind == perf_event_type::PERF_RECORD_SAMPLE as u32 && body_len >= 4 {
                let size = u32::from_ne_bytes(std::array::from_fn(byte));
                let raw = (size as usize).min(body_len - 4);
                // SAFETY: the sample's bytes follow its u32 size, inside its record.
                let (s1, s2) = unsafe { self.bytes(tail + 12, raw) };
                f(PerfRecord::Sample { head: s1, tail: s2 });
                n += 1;
            } else if kind == perf_event_type::PERF_RECORD_LOST as u32 && body_len >= 16 {
                // { u64 id; u64 lost; }
                f(PerfRecord::Lost(word(8)));
                n += 1;
            }
            tail += size;
        }
        // Release: the kernel may write over these records once it sees the new tail.
        tail_at.store(tail, Ordering::Release);
        n
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// Puts the perf event `event` at `index` of the perf event array `map`
/// (`BPF_MAP_UPDATE_ELEM`; aya has no public way for a descriptor it did not open).
pub fn set_array_slot(map: BorrowedFd<'_>, index: u32, event: BorrowedFd<'_>) -> io::Result<()> {
    /// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
    #[repr(C)]
    struct MapElem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    let value = event.as_raw_fd() as u32;
    let attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: ptr::from_ref(&index) as u64,
        value: ptr::from_ref(&value) as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) with a valid attribute of the size given; key and value point at u32s
    // that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            ptr::from_ref(&attr),
            size_of::<MapElem>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
