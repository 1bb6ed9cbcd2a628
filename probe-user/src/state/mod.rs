//! What user space knows about the system: mount tables per mount namespace, process
//! context read from `/proc`, and the successful unmounts of the last minutes.

pub mod memo;
pub mod mount_cache;
pub mod mountinfo;
pub mod process;
pub mod statx;
pub mod unmount_history;
