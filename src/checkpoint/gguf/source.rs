//! A reader that knows how many bytes the file has left. Every read checks the bytes it needs
//! against what remains before touching the file, and every length read from the file is checked
//! against what remains (and against a named cap) before anything is allocated for it.

use super::error::{Bound, FormatError};
use std::io::Read;

/// Little-endian reads over `inner`, bounded by the file length `len`.
pub(super) struct Source<R> {
    inner: R,
    pos: u64,
    len: u64,
    /// What is being read, for error messages (`key #3 (`llama.block_count`)`).
    pub ctx: String,
}

macro_rules! le_readers {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            pub fn $name(&mut self, what: &str) -> Result<$ty, FormatError> {
                Ok(<$ty>::from_le_bytes(self.array(what)?))
            }
        )*
    };
}

impl<R: Read> Source<R> {
    /// Reads from `inner`, which is positioned at byte 0 of a file of `len` bytes.
    pub fn new(inner: R, len: u64) -> Self {
        Source {
            inner,
            pos: 0,
            len,
            ctx: String::new(),
        }
    }

    /// The offset of the next byte to read.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes between the current position and the end of the file.
    pub fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// `what` in the current context, for messages.
    pub fn describe(&self, what: &str) -> String {
        if self.ctx.is_empty() {
            what.to_string()
        } else {
            format!("{}: {what}", self.ctx)
        }
    }

    fn need(&self, n: u64, what: &str) -> Result<(), FormatError> {
        if n > self.left() {
            return Err(FormatError::Truncated {
                what: self.describe(what),
                at: self.pos,
                need: n,
                left: self.left(),
            });
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), FormatError> {
        self.need(buf.len() as u64, what)?;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file shrank while we read it.
                FormatError::Truncated {
                    what: self.describe(what),
                    at: self.pos,
                    need: buf.len() as u64,
                    left: 0,
                }
            } else {
                FormatError::Io(e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    le_readers! {
        u8: u8, i8: i8, u16: u16, i16: i16, u32: u32, i32: i32,
        u64: u64, i64: i64, f32: f32, f64: f64,
    }

    /// A length-prefixed string of at most `cap` bytes, as raw bytes.
    pub fn string(&mut self, what: &str, cap: u64) -> Result<Vec<u8>, FormatError> {
        let len = self.u64(what)?;
        let too_long = |bound| FormatError::StringTooLong {
            what: self.describe(what),
            len,
            bound,
        };
        if len > cap {
            return Err(too_long(Bound::Cap(cap)));
        }
        if len > self.left() {
            return Err(too_long(Bound::File(self.left())));
        }
        // Both checks above bound `len` by the file length and the cap, so this cannot be absurd.
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    /// A non-empty UTF-8 name (metadata key, tensor name) of at most `cap` bytes.
    pub fn name(&mut self, what: &str, cap: u64) -> Result<String, FormatError> {
        let bytes = self.string(what, cap)?;
        if bytes.is_empty() {
            return Err(FormatError::EmptyName {
                what: self.describe(what),
            });
        }
        String::from_utf8(bytes).map_err(|_| FormatError::NotUtf8 {
            what: self.describe(what),
        })
    }

    /// Reads the name (`what`) of entry `i` of a section, and sets the context errors give:
    /// `numbered` and the entry's number while the name is read, then `named` and the name.
    pub fn entry_name(
        &mut self,
        i: u64,
        (numbered, named): (&str, &str),
        what: &str,
        cap: u64,
    ) -> Result<String, FormatError> {
        self.ctx = format!("{numbered} #{i}");
        let name = self.name(what, cap)?;
        self.ctx = format!("{named} `{name}`");
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_tracks_position() {
        let bytes = [1u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        let mut s = Source::new(&bytes[..], bytes.len() as u64);
        assert_eq!(s.u32("a").unwrap(), 1);
        assert_eq!(s.u64("b").unwrap(), 2);
        assert_eq!((s.pos(), s.left()), (12, 0));
        assert!(matches!(
            s.u8("c"),
            Err(FormatError::Truncated {
                need: 1,
                left: 0,
                ..
            })
        ));
    }

    #[test]
    fn string_length_checked_before_allocating() {
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let mut s = Source::new(&bytes[..], bytes.len() as u64);
        let e = s.string("name", u64::MAX).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::StringTooLong {
                    bound: Bound::File(3),
                    ..
                }
            ),
            "{e}"
        );
        let mut s = Source::new(&bytes[..], bytes.len() as u64);
        let e = s.string("name", 16).unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::StringTooLong {
                    bound: Bound::Cap(16),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn names_must_be_nonempty_utf8() {
        let mut bytes = 0u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&[0xff, 0xfe]);
        let mut s = Source::new(&bytes[..], bytes.len() as u64);
        assert!(matches!(
            s.name("key", 10),
            Err(FormatError::EmptyName { .. })
        ));
        assert!(matches!(
            s.name("key", 10),
            Err(FormatError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn a_file_that_shrinks_reads_as_truncated() {
        // The declared length says 8 bytes, but the reader holds only 4.
        let bytes = [0u8; 4];
        let mut s = Source::new(&bytes[..], 8);
        assert!(matches!(s.u64("x"), Err(FormatError::Truncated { .. })));
    }
}
