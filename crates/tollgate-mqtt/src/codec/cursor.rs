//! A bounds-checked read cursor over a frozen frame. Every read is checked; nothing here can
//! panic, whatever the bytes.

use bytes::Bytes;
use bytestring::ByteString;

use crate::DecodeError;

/// Reads fields from `frame[pos..end]`. Slices handed out share the frame's allocation.
pub(crate) struct Cursor<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `frame[pos..]`.
    #[inline]
    pub(crate) fn new(frame: &'a Bytes, pos: usize) -> Self {
        Cursor {
            frame,
            pos: pos.min(frame.len()),
            end: frame.len(),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// Error unless every byte has been consumed.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Advances past `n` bytes and returns their range.
    #[inline]
    fn advance(&mut self, n: usize) -> Result<(usize, usize), DecodeError> {
        let start = self.pos;
        let end = start.checked_add(n).ok_or(DecodeError::UnexpectedEof)?;
        if end > self.end {
            return Err(DecodeError::UnexpectedEof);
        }
        self.pos = end;
        Ok((start, end))
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (start, end) = self.advance(n)?;
        let all: &'a [u8] = self.frame.as_ref();
        all.get(start..end).ok_or(DecodeError::UnexpectedEof)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(DecodeError::UnexpectedEof),
        }
    }

    /// A Variable Byte Integer of at most 4 bytes.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for shift in [0u32, 7, 14, 21] {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVarInt)
    }

    /// `n` bytes as a zero-copy slice of the frame.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let (start, end) = self.advance(n)?;
        if end > self.frame.len() {
            return Err(DecodeError::UnexpectedEof);
        }
        Ok(self.frame.slice(start..end))
    }

    /// Everything up to the end (the PUBLISH payload).
    #[inline]
    pub(crate) fn rest(&mut self) -> Result<Bytes, DecodeError> {
        self.bytes(self.remaining())
    }

    /// Binary data: two-byte length then that many bytes, as a slice of the frame.
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// Binary data borrowed from the frame.
    #[inline]
    pub(crate) fn binary_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 encoded string as a slice of the frame: valid UTF-8 without U+0000.
    #[inline]
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let b = self.binary()?;
        if b.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        ByteString::try_from(b).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A UTF-8 encoded string copied into a `String`.
    #[inline]
    pub(crate) fn string_owned(&mut self) -> Result<String, DecodeError> {
        let b = self.binary_slice()?;
        if b.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Splits off the next `n` bytes as a cursor of their own (a property block) and
    /// advances past them.
    #[inline]
    pub(crate) fn sub(&mut self, n: usize) -> Result<Cursor<'a>, DecodeError> {
        let (start, end) = self.advance(n)?;
        Ok(Cursor {
            frame: self.frame,
            pos: start,
            end,
        })
    }
}
