//! The protobuf wire format: varints, tags and length-delimited fields.

pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
pub(super) const START_GROUP: u8 = 3;
pub(super) const END_GROUP: u8 = 4;
pub(super) const FIXED32: u8 = 5;

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    /// A field key: (tag, wire type).
    pub fn key(&mut self) -> Result<(u32, u8), String> {
        let key = self.varint()?;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(format!("invalid field number {tag}"));
        }
        Ok((tag as u32, (key & 7) as u8))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "length overflows".to_string())?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(format!(
                "truncated field: {len} bytes announced, {} left",
                self.buf.len() - self.pos
            ));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn fixed32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap()))
    }

    pub fn fixed64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err("truncated fixed-width field".into());
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Skips a field's value of wire type `wt` (unknown fields).
    pub fn skip(&mut self, tag: u32, wt: u8) -> Result<(), String> {
        match wt {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => loop {
                if self.done() {
                    return Err("unterminated group".into());
                }
                let (t, w) = self.key()?;
                if w == END_GROUP {
                    if t != tag {
                        return Err("mismatched end of group".into());
                    }
                    return Ok(());
                }
                self.skip(t, w)?;
            },
            other => Err(format!("invalid wire type {other}")),
        }
    }
}

/// The last occurrence of length-delimited field `tag` in a message.
pub(super) fn last_bytes(buf: &[u8], tag: u32) -> Result<Option<&[u8]>, String> {
    let mut r = Reader::new(buf);
    let mut out = None;
    while !r.done() {
        let (t, wt) = r.key()?;
        if t == tag && wt == LEN {
            out = Some(r.bytes()?);
        } else {
            r.skip(t, wt)?;
        }
    }
    Ok(out)
}
