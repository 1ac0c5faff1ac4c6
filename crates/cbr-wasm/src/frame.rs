//! The framing of requests and responses: a JSON object, then blobs, each
//! preceded by its length as a little-endian u32:
//!
//! ```text
//! u32 json_len, json bytes, u32 blob_count, (u32 len, bytes) × blob_count
//! ```

use anyhow::{bail, Result};

/// A request or response: its JSON and its blobs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub json: serde_json::Value,
    pub blobs: Vec<Vec<u8>>,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8]> {
    if bytes.len() < n {
        bail!("the request ends inside its {what}");
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8], what: &str) -> Result<usize> {
    let b = take(bytes, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

impl Frame {
    pub fn decode(mut bytes: &[u8]) -> Result<Frame> {
        let n = take_u32(&mut bytes, "JSON length")?;
        let json = serde_json::from_slice(take(&mut bytes, n, "JSON")?)?;
        let count = take_u32(&mut bytes, "blob count")?;
        let mut blobs = Vec::with_capacity(count.min(16));
        for i in 0..count {
            let n = take_u32(&mut bytes, "blob length")?;
            blobs.push(take(&mut bytes, n, &format!("blob {i}"))?.to_vec());
        }
        if !bytes.is_empty() {
            bail!("{} bytes after the last blob", bytes.len());
        }
        Ok(Frame { json, blobs })
    }

    pub fn encode(&self) -> Vec<u8> {
        let json = self.json.to_string();
        let len = 8 + json.len() + self.blobs.iter().map(|b| 4 + b.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for b in &self.blobs {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_truncation_is_an_error() {
        let f = Frame { json: serde_json::json!({"op": "x"}), blobs: vec![vec![1, 2, 3], vec![]] };
        let bytes = f.encode();
        assert_eq!(Frame::decode(&bytes).unwrap(), f);
        for n in 0..bytes.len() {
            assert!(Frame::decode(&bytes[..n]).is_err(), "{n} bytes");
        }
    }
}
