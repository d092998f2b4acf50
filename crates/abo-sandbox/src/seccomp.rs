//! seccomp: the system calls no build, test or agent needs fail with `EPERM`, and a few are
//! refused by their arguments: new namespaces, device nodes, typing into a terminal, and for
//! agents every socket but TCP and UNIX ones.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::Network;

/// Debugging other processes, mounting, loading kernels, modules or BPF, the kernel keyring,
/// namespaces, io_uring (its operations bypass the socket rules below), and administering the
/// machine.
fn denied() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    v
}

/// The namespace flags `clone` may not be given (`unshare` and `setns` are refused outright).
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// Socket families a sandboxed process may open: UNIX (pipes between its own processes; host
/// sockets are masked in its mount namespace), IPv4 and IPv6 (Landlock limits TCP), netlink
/// (interface lists; without capabilities it changes nothing).
const FAMILIES: [libc::c_int; 4] = [
    libc::AF_UNIX,
    libc::AF_INET,
    libc::AF_INET6,
    libc::AF_NETLINK,
];

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| e.to_string())
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| e.to_string())
}

fn flag(v: libc::c_int) -> u64 {
    u64::from(v.unsigned_abs())
}

/// The refused calls: by number, or by arguments.
fn refused(network: Network) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    use SeccompCmpArgLen::{Dword, Qword};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied().into_iter().map(|n| (n, Vec::new())).collect();
    // clone(flags, ...) with any namespace flag.
    let clone = NAMESPACE_FLAGS
        .iter()
        .map(|f| {
            rule(vec![cond(
                0,
                Qword,
                SeccompCmpOp::MaskedEq(flag(*f)),
                flag(*f),
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone);
    // Pushing input into a terminal (the kernel reads the request as 32 bits).
    let ioctl = [libc::TIOCSTI, libc::TIOCLINUX]
        .iter()
        .map(|r| rule(vec![cond(1, Dword, SeccompCmpOp::Eq, *r)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl);
    // Block and character device nodes (FIFOs and sockets stay).
    let devices = |arg: u8| -> Result<Vec<SeccompRule>, String> {
        [libc::S_IFBLK, libc::S_IFCHR]
            .iter()
            .map(|t| {
                rule(vec![cond(
                    arg,
                    Dword,
                    SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT)),
                    u64::from(*t),
                )?])
            })
            .collect()
    };
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_mknod, devices(1)?);
    rules.insert(libc::SYS_mknodat, devices(2)?);
    // socket(family, type, protocol): only the families above; agents, which reach the network
    // only through the egress proxy, get no datagram, raw or packet sockets either.
    let mut socket = vec![rule(
        FAMILIES
            .iter()
            .map(|f| cond(0, Dword, SeccompCmpOp::Ne, flag(*f)))
            .collect::<Result<Vec<_>, _>>()?,
    )?];
    if matches!(network, Network::Proxy { .. }) {
        for family in [libc::AF_INET, libc::AF_INET6] {
            // 10: the obsolete SOCK_PACKET.
            for kind in [libc::SOCK_DGRAM, libc::SOCK_RAW, 10] {
                socket.push(rule(vec![
                    cond(0, Dword, SeccompCmpOp::Eq, flag(family))?,
                    cond(1, Dword, SeccompCmpOp::MaskedEq(0xf), flag(kind))?,
                ])?);
            }
        }
    }
    rules.insert(libc::SYS_socket, socket);
    Ok(rules)
}

fn arch() -> Result<TargetArch, String> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err("seccomp: unsupported architecture".into())
    }
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: libc::c_int,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno.unsigned_abs()),
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Installs the filters on this thread (inherited by everything it starts).
pub(crate) fn install(network: Network) -> Result<(), String> {
    // clone3 passes its flags in memory a filter cannot read: it answers ENOSYS, so the C library
    // falls back to clone, whose flags are checked above.
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let first = compile(clone3, libc::ENOSYS)?;
    let second = compile(refused(network)?, libc::EPERM)?;
    seccompiler::apply_filter(&first).map_err(|e| e.to_string())?;
    seccompiler::apply_filter(&second).map_err(|e| e.to_string())
}
