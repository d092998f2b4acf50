//! An agent's stream read line by line with a bound: a line longer than [`MAX_LINE`] is kept cut
//! and the rest of it read and dropped, so output without newlines cannot grow abo's memory
//! (`tokio`'s `Lines` keeps a whole line, however long, in memory).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line of an agent's stream abo keeps: far more than any JSON event a CLI prints
/// (their tool results are cut well below it).
pub const MAX_LINE: usize = 8 << 20;

/// What a cut line ends with.
pub const CUT: &str = " [abo: the rest of this line was dropped]";

/// The lines of a stream, each at most `max` bytes.
pub struct BoundedLines<R> {
    inner: R,
    max: usize,
    line: Vec<u8>,
    cut: bool,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            line: Vec::new(),
            cut: false,
        }
    }

    /// The next line, without its line ending and with invalid UTF-8 replaced; `None` at the end.
    /// Cancel-safe: what was read is kept in `self` between calls.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if self.line.is_empty() && !self.cut {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let (part, used, ends) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            let room = self.max.saturating_sub(self.line.len());
            if part.len() > room {
                self.cut = true;
            }
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            self.inner.consume(used);
            if ends {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut s = String::from_utf8_lossy(&line).into_owned();
        if std::mem::take(&mut self.cut) {
            s.push_str(CUT);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of `n` bytes without a newline, then `tail`, made as it is read (never held).
    struct Flood {
        left: usize,
        tail: &'static [u8],
        block: Vec<u8>,
    }

    impl tokio::io::AsyncRead for Flood {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.left > 0 {
                let n = self.left.min(buf.remaining()).min(self.block.len());
                buf.put_slice(&self.block[..n]);
                self.left -= n;
            } else if !self.tail.is_empty() {
                let n = self.tail.len().min(buf.remaining());
                let tail = self.tail;
                buf.put_slice(&tail[..n]);
                self.tail = &tail[n..];
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn flood(n: usize, tail: &'static [u8]) -> tokio::io::BufReader<Flood> {
        tokio::io::BufReader::new(Flood {
            left: n,
            tail,
            block: vec![b'x'; 64 * 1024],
        })
    }

    /// The attack: 64 MiB without a newline. The bounded reader keeps 1 MiB of it, cut, and the
    /// next line whole; the control, `tokio`'s own `lines()`, holds the whole flood as one line.
    #[tokio::test]
    async fn a_line_without_end_is_cut_and_the_next_line_is_whole() {
        const FLOOD: usize = 64 << 20;
        let mut lines =
            BoundedLines::new(flood(FLOOD, b"\r\n{\"type\":\"result\"}\nlast"), 1 << 20);
        let first = lines.next_line().await.unwrap().unwrap();
        assert_eq!(first.len(), (1 << 20) + CUT.len());
        assert!(first.ends_with(CUT));
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("{\"type\":\"result\"}")
        );
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("last"));
        assert_eq!(lines.next_line().await.unwrap(), None);

        // Control: the plain reader keeps every byte of the flood in one line.
        let mut plain = flood(FLOOD, b"\n").lines();
        assert_eq!(plain.next_line().await.unwrap().unwrap().len(), FLOOD);
    }

    #[tokio::test]
    async fn lines_read_as_tokio_reads_them() {
        let text: &[u8] = b"a\r\nb\n\nc\xffd\n";
        let mut lines = BoundedLines::new(tokio::io::BufReader::new(text), MAX_LINE);
        let mut got = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            got.push(l);
        }
        assert_eq!(got, ["a", "b", "", "c\u{fffd}d"]);
    }
}
