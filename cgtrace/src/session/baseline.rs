//! Baseline frames: the cgroups that existed at start, split in chunks of about
//! [`BASELINE_CHUNK`] payload bytes.

use std::io;

use bytes::BytesMut;

use super::{
    Baseline, BaselineCgroup,
    wire::{
        BASELINE_CHUNK, Cur, DResult, MAX_STRING_LEN, Malformed, invalid, put_bytes, put_varint,
    },
};

/// Splits the baseline into chunk payloads (without chunk index/count, which are prepended
/// when written). Returns (payload bodies, cgroups per chunk).
pub(super) fn encode_baseline_chunks(bl: &Baseline) -> io::Result<Vec<(BytesMut, u32)>> {
    let mut chunks = Vec::new();
    let mut body = BytesMut::new();
    let mut n = 0u32;
    for cg in &bl.cgroups {
        if cg.path.len() > MAX_STRING_LEN {
            return Err(invalid(format!(
                "baseline cgroup path of {} bytes exceeds the {MAX_STRING_LEN}-byte limit",
                cg.path.len()
            )));
        }
        put_varint(&mut body, u64::from(cg.hierarchy_id));
        put_varint(&mut body, cg.cgroup_id);
        put_varint(&mut body, u64::from(cg.level));
        put_bytes(&mut body, &cg.path);
        n += 1;
        if body.len() >= BASELINE_CHUNK {
            chunks.push((std::mem::take(&mut body), n));
            n = 0;
        }
    }
    if n > 0 || chunks.is_empty() {
        chunks.push((body, n));
    }
    Ok(chunks)
}

/// One decoded baseline chunk.
pub(super) struct BaselineChunk {
    pub(super) total: u64,
    pub(super) taken_at_ns: u64,
    pub(super) dying: Vec<(u32, u64)>,
    pub(super) cgroups: Vec<BaselineCgroup>,
}

pub(super) fn decode_baseline_chunk(p: &[u8]) -> DResult<BaselineChunk> {
    let mut c = Cur::new(p);
    let index = c.varint()?;
    let total = c.varint()?;
    if index >= total {
        return Err(Malformed("baseline chunk index beyond the chunk count"));
    }
    let taken_at_ns = c.varint()?;
    let nd = c.count(2)?;
    let mut dying = Vec::with_capacity(nd);
    for _ in 0..nd {
        dying.push((c.varint_u32()?, c.varint()?));
    }
    let ncg = c.count(4)?;
    let mut cgroups = Vec::with_capacity(ncg);
    for _ in 0..ncg {
        cgroups.push(BaselineCgroup {
            hierarchy_id: c.varint_u32()?,
            cgroup_id: c.varint()?,
            level: c.varint_u32()?,
            path: c.bytes()?.to_vec(),
        });
    }
    Ok(BaselineChunk {
        total,
        taken_at_ns,
        dying,
        cgroups,
    })
}
