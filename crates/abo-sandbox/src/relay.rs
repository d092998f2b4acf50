//! The agents' only way out of their network namespace: a listener on the namespace's own
//! `127.0.0.1:PORT`, made by the sandbox's init and handed to the helper outside, which relays
//! each connection to the egress proxy on the host's `127.0.0.1:PORT`. Nothing else is reachable
//! from inside: no other address, no other port, no host service listening anywhere.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The two ends of the channel the listener is handed over.
pub(crate) fn channel() -> Result<(OwnedFd, OwnedFd), String> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("relay: socketpair: {e}"))
}

/// In the sandbox's network namespace: listens on its loopback at `port` and sends the listener
/// over `to`.
pub(crate) fn listen_and_send(port: u16, to: &OwnedFd) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("relay: listening on 127.0.0.1:{port} inside: {e}"))?;
    let fds = [listener.as_raw_fd()];
    sendmsg::<()>(
        to.as_raw_fd(),
        &[IoSlice::new(b"L")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("relay: handing the listener over: {e}"))?;
    // The helper holds it now; this copy closes here.
    Ok(())
}

/// Outside, in a process of its own (a process that made a new PID namespace cannot start
/// threads): receives the listener and relays every connection on it to the host's
/// `127.0.0.1:port`, a thread per direction, until the listener fails.
pub(crate) fn receive_and_relay(from: &OwnedFd, port: u16) -> Result<(), String> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        from.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("relay: receiving the listener: {e}"))?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(|e| format!("relay: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let Some(fd) = fd else {
        return Err("relay: init sent no listener".into());
    };
    // SAFETY: the descriptor was just received over SCM_RIGHTS: this process owns it, and
    // nothing else here refers to it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    for inside in listener.incoming().flatten() {
        std::thread::spawn(move || {
            if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                pipe_both(inside, outside);
            }
        });
    }
    Ok(())
}

/// Copies each way until both sides are done.
fn pipe_both(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy(a, b));
    copy(b2, a2);
    let _ = up.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
