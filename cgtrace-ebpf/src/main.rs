//! cgtrace's eBPF programs: one program per hook, all writing [`RawEvent`]s to one ring buffer.
#![no_std]
#![no_main]

/// Fails to compile unless the program function, map or global `$item` exists here and its name
/// is `$name`, a constant of `cgtrace_common::names` the loader looks it up by (aya-ebpf's
/// macros take the name from the item, not from a constant).
macro_rules! bpf_name {
    (program $name:expr, $item:ident) => {
        const _: () = {
            let _ = $item;
            assert!(
                crate::same_name($name, stringify!($item)),
                concat!(
                    "cgtrace_common::names has another name for ",
                    stringify!($item)
                )
            );
        };
    };
    (static $name:expr, $item:ident) => {
        const _: () = {
            let _ = core::ptr::addr_of!($item);
            assert!(
                crate::same_name($name, stringify!($item)),
                concat!(
                    "cgtrace_common::names has another name for ",
                    stringify!($item)
                )
            );
        };
    };
}

mod cgroup_mkdir;
mod cgroup_tp;
mod css;
mod event;
mod mkdir_fail;
mod oom;
mod walk;

/// `a == b`, in a `const`.
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
