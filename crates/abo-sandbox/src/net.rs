//! The network namespace of gates and commands: only its own loopback, brought up.

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> Result<(), String> {
    // SAFETY: a plain datagram socket used only for the interface ioctls below; closed at the end.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills its flags field.
    let got = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    let result = if got < 0 {
        Err(format!(
            "reading lo's flags: {}",
            std::io::Error::last_os_error()
        ))
    } else {
        // SAFETY: SIOCGIFFLAGS succeeded, so the flags member of the union is the one set.
        unsafe {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        }
        // SAFETY: `req` names "lo" with its flags plus IFF_UP.
        let set = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) };
        if set < 0 {
            Err(format!(
                "bringing lo up: {}",
                std::io::Error::last_os_error()
            ))
        } else {
            Ok(())
        }
    };
    // SAFETY: `fd` is the socket opened above, closed once.
    unsafe { libc::close(fd) };
    result
}
