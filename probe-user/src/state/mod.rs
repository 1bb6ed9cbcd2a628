//! What user space knows about the system: mount tables per mount namespace and process
//! context read from `/proc`.

pub mod mount_cache;
pub mod mountinfo;
pub mod process;
pub mod statx;
