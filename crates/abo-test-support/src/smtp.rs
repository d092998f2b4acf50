//! A local SMTP sink: accepts every message and keeps it (envelope and data).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

pub struct SmtpSink {
    pub addr: String,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let kept = mails.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let _ = w.write_all(b"220 sink ESMTP\r\n");
                let mut mail = Mail::default();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let cmd = line.trim_end().to_owned();
                    let upper = cmd.to_ascii_uppercase();
                    if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        let _ = w.write_all(b"250-sink\r\n250 8BITMIME\r\n");
                    } else if let Some(f) = upper.strip_prefix("MAIL FROM:") {
                        mail.from = cmd[cmd.len() - f.len()..]
                            .trim_matches(['<', '>', ' '])
                            .to_owned();
                        let _ = w.write_all(b"250 ok\r\n");
                    } else if let Some(t) = upper.strip_prefix("RCPT TO:") {
                        mail.to.push(
                            cmd[cmd.len() - t.len()..]
                                .trim_matches(['<', '>', ' '])
                                .to_owned(),
                        );
                        let _ = w.write_all(b"250 ok\r\n");
                    } else if upper == "DATA" {
                        let _ = w.write_all(b"354 go on\r\n");
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                                break;
                            }
                            mail.data.push_str(&line);
                        }
                        kept.lock().unwrap().push(std::mem::take(&mut mail));
                        let _ = w.write_all(b"250 queued\r\n");
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n");
                        break;
                    } else {
                        let _ = w.write_all(b"500 what\r\n");
                    }
                }
            }
        });
        Self { addr, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}
