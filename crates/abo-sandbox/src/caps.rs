//! Capabilities: none. abo may run as root (and a user namespace gives even an unprivileged
//! process every capability inside it); a sandboxed process keeps its uid but no capability, in
//! no set, and cannot get one back: not by exec (the bounding set is empty and root gets nothing
//! for its uid), not through ambient capabilities, not through a setuid program.

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

/// `SECBIT_NOROOT`, `SECBIT_NO_SETUID_FIXUP`, `SECBIT_NO_CAP_AMBIENT_RAISE`, each with its lock,
/// and `SECBIT_KEEP_CAPS_LOCKED`.
const SECUREBITS: libc::c_ulong = 0b1110_1111;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

fn check(what: &str, r: libc::c_int) -> Result<(), String> {
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "capabilities: {what}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Drops every capability of this process for good.
pub(crate) fn drop_all() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    check("securebits", unsafe {
        libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0)
    })?;
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only; an unknown cap number fails with EINVAL.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return check("bounding set", r);
        }
    }
    // SAFETY: prctl with integer arguments only.
    check("ambient", unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data words, both valid for the call.
    check("capset", unsafe {
        libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) as libc::c_int
    })
}
