//! cgtrace's eBPF programs: one program per hook, all writing [`RawEvent`]s to one ring buffer.
#![no_std]
#![no_main]

mod cgroup_tp;
mod css;
mod event;
mod mkdir_fail;
mod walk;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
