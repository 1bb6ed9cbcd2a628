//! Kernel struct field offsets, one read-only global each, set by the loader from the
//! running kernel's BTF (Rust eBPF has no CO-RE). `u32::MAX` means unknown: the code that
//! needs it does nothing. The list is `probe_common::with_offset_globals!`, which also gives
//! user space their names (`probe_common::names::offsets`).

use aya_ebpf::Global;

/// One `#[no_mangle]` global per offset, its identifier its symbol.
macro_rules! offset_globals {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            pub static $name: Global<u32> = Global::new(u32::MAX);
        )*
    };
}

probe_common::with_offset_globals!(offset_globals);

/// The offset held by `global`, or `None` when it is unknown.
#[inline(always)]
pub fn get(global: &Global<u32>) -> Option<u64> {
    let v = global.load();
    (v != u32::MAX).then_some(u64::from(v))
}
