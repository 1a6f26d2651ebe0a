//! SHA-256 off the copy path. Pruning reads every source byte once and hashes it, and hashes every
//! byte it writes; on a copy-bound job those two hashes would double the wall time if done inline.
//! A [`HashWorker`] hashes shared chunks on its own thread while the caller goes on reading and
//! writing. Its queue is bounded, so memory stays at a few chunks.

use super::provenance::hex;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Chunks queued per worker before the sender waits.
const QUEUE: usize = 4;

enum Msg {
    Data(Arc<Vec<u8>>, Range<usize>),
    EndOfFile,
}

/// Hashes a sequence of files, each a stream of chunks, on a background thread.
pub struct HashWorker {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<Vec<String>>>,
}

impl HashWorker {
    pub fn spawn() -> Self {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let handle = std::thread::spawn(move || {
            let mut done = Vec::new();
            let mut h = Sha256::new();
            for msg in rx {
                match msg {
                    Msg::Data(buf, r) => h.update(&buf[r]),
                    Msg::EndOfFile => done.push(hex(&std::mem::take(&mut h).finalize())),
                }
            }
            done
        });
        HashWorker {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Adds `buf[range]` to the current file.
    pub fn update(&self, buf: &Arc<Vec<u8>>, range: Range<usize>) {
        if let Some(tx) = &self.tx {
            // A send fails only if the worker died; `finish` reports that.
            let _ = tx.send(Msg::Data(Arc::clone(buf), range));
        }
    }

    /// Ends the current file; its hash is the next one `finish` returns.
    pub fn end_file(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::EndOfFile);
        }
    }

    /// Waits for the worker and returns one hex digest per ended file, in order.
    pub fn finish(mut self) -> Vec<String> {
        self.tx.take();
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for HashWorker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_inline_hashing() {
        let w = HashWorker::spawn();
        let a = Arc::new(b"hello world".to_vec());
        w.update(&a, 0..5);
        w.update(&a, 5..11);
        w.end_file();
        w.end_file();
        let got = w.finish();
        assert_eq!(got[0], hex(&Sha256::digest(b"hello world")));
        assert_eq!(got[1], hex(&Sha256::digest(b"")));
    }
}
