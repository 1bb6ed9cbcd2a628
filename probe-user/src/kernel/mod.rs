//! Facts about the running kernel and this process: privileges, tracefs, BTF struct offsets,
//! the active LSMs.

pub mod btf;
pub mod lsm;
pub mod offset_cache;
pub mod privileges;
pub mod tracefs;

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
