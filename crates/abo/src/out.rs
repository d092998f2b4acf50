//! Writing to stdout: a reader that went away (`abo events | head`) ends abo quietly, exit 0.

use std::io::Write;

pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// `println!` to stdout, through [`emit`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::out::emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// `print!` to stdout, through [`emit`].
macro_rules! say_raw {
    ($($arg:tt)*) => { $crate::out::emit(&format!($($arg)*)) };
}

pub(crate) use {say, say_raw};
