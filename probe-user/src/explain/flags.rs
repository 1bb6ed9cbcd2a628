//! The kernel's rules for `umount2` flags (fs/namespace.c): `ksys_umount` refuses any bit but
//! `MNT_FORCE`, `MNT_DETACH`, `MNT_EXPIRE` and `UMOUNT_NOFOLLOW` with EINVAL before it looks at
//! the target; `do_umount`, once the target is known to be a mount's root, refuses
//! `MNT_EXPIRE` together with `MNT_FORCE` or `MNT_DETACH`, and `MNT_EXPIRE` on the caller's own
//! root mount, with EINVAL too.

use crate::event::{flag_names, UMOUNT_FLAGS};

/// Every flag bit the kernel accepts.
fn known() -> u32 {
    UMOUNT_FLAGS.iter().fold(0, |acc, (bit, _)| acc | bit)
}

/// The bits of `flags` the kernel does not know, if any.
pub fn unknown_bits(flags: u32) -> Option<u32> {
    let unknown = flags & !known();
    (unknown != 0).then_some(unknown)
}

/// The flags `MNT_EXPIRE` is combined with that the kernel refuses with it (`MNT_FORCE`,
/// `MNT_DETACH`), none when `MNT_EXPIRE` is not set.
pub fn expire_conflicts(flags: u32) -> Vec<String> {
    let expire = libc::MNT_EXPIRE as u32;
    if flags & expire == 0 {
        return Vec::new();
    }
    let refused = (libc::MNT_FORCE | libc::MNT_DETACH) as u32;
    flag_names(flags & refused)
}

/// What is wrong with `flags` whatever the target: unknown bits, said in a sentence.
pub fn unknown_bits_sentence(unknown: u32) -> String {
    let names: Vec<&str> = UMOUNT_FLAGS.iter().map(|(_, name)| *name).collect();
    format!(
        "umount2 was passed unknown flag bits {unknown:#x}: the kernel accepts only {} and \
         refuses anything else before it looks at the target",
        names.join(", ")
    )
}

/// `MNT_EXPIRE` combined with `with` (`MNT_DETACH`...), said in a sentence.
pub fn expire_conflict_sentence(with: &[String]) -> String {
    format!(
        "MNT_EXPIRE cannot be combined with {}: the kernel refuses MNT_EXPIRE together with \
         MNT_FORCE or MNT_DETACH (expiry marks an unused mount and unmounts it on a second \
         call; it does not force or detach)",
        with.join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORCE: u32 = libc::MNT_FORCE as u32;
    const DETACH: u32 = libc::MNT_DETACH as u32;
    const EXPIRE: u32 = libc::MNT_EXPIRE as u32;
    const NOFOLLOW: u32 = libc::UMOUNT_NOFOLLOW as u32;

    #[test]
    fn bits_beyond_the_four_flags_are_unknown() {
        assert_eq!(unknown_bits(0), None);
        assert_eq!(unknown_bits(FORCE | DETACH | EXPIRE | NOFOLLOW), None);
        assert_eq!(unknown_bits(DETACH | 0x40), Some(0x40));
        assert_eq!(unknown_bits(0x8000_0010), Some(0x8000_0010));
        assert!(unknown_bits_sentence(0x40).contains("0x40"));
    }

    #[test]
    fn expire_is_refused_with_force_or_detach_only() {
        assert!(expire_conflicts(EXPIRE).is_empty());
        assert!(expire_conflicts(EXPIRE | NOFOLLOW).is_empty());
        assert!(expire_conflicts(FORCE | DETACH).is_empty(), "no MNT_EXPIRE");
        assert_eq!(expire_conflicts(EXPIRE | DETACH), ["MNT_DETACH"]);
        assert_eq!(
            expire_conflicts(EXPIRE | FORCE | DETACH),
            ["MNT_FORCE", "MNT_DETACH"]
        );
        let s = expire_conflict_sentence(&expire_conflicts(EXPIRE | DETACH));
        assert!(
            s.starts_with("MNT_EXPIRE cannot be combined with MNT_DETACH:"),
            "{s}"
        );
    }
}
