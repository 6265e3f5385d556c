//! Paged KV caches (MLA latent caches) stored as t3fs files, and loading a batch of them into a
//! paged cache in FlashMLA's layout.
//!
//! File layout, one file per sequence: the sequence's tokens in order, each token `h_kv × 576`
//! bf16 values stored as little-endian u16 bits (head-major inside a token, the 576 values of one
//! head contiguous: 512 latent values then 64 RoPE values). Token `t` starts at byte
//! `t · h_kv · 576 · 2`, and the file is exactly `seqlen` tokens long, so its length gives the
//! token count (a length that is not a whole number of tokens is a [`KernelError::Format`] error).
//!
//! Page `p` of a sequence is tokens `[64p, 64p + 64)`: one contiguous byte range of
//! `64 · h_kv · 576 · 2` bytes (73,728 for `h_kv = 1`), in exactly the order of one block of
//! FlashMLA's paged cache `[num_blocks, 64, h_kv, 576]`. So loading a page is one read straight
//! into its block's bytes; the last page of a sequence may be partial (read short).
//!
//! [`load_batch`] assigns blocks in order (sequence 0's pages first, then sequence 1's, ...),
//! reads every page through the batch reader and fills the block table: `block_table[b][p]` is
//! the block holding page `p` of sequence `b`, and unused entries hold [`UNUSED_BLOCK`]
//! (2147480000, FlashMLA's test sentinel, far outside any real cache) so a kernel that reads them
//! faults instead of reading plausible data. Bytes of a block past a sequence's last token are
//! never written: tests fill the cache with NaN to prove nothing reads them.
//!
//! Every page is read straight into its block of the caller's (pinned) cache: each read gets a
//! `ReadBuf::External` over exactly its block's first `len` bytes, so nothing is copied after the
//! client and no read can touch bytes past the sequence's end. The cache is passed BY VALUE and
//! handed back with the plan: the client runs every read as its own tokio task (`tokio::spawn`
//! in `t3fs_client::batch`), which keeps running if the future that submitted it is dropped, so a
//! borrowed `&mut [u8]` would be written after the borrow ended when a caller cancels
//! [`load_batch`] (a timeout, a `select!`). Instead the cache is lent to the reads the same way
//! the sample loader lends its batch buffers ([`crate::sample_loader`]'s `LentBuf`): every read
//! co-owns it until it finishes, and `load_batch` takes it back only after every completion.
use std::ops::DerefMut;
use std::sync::Arc;

use futures::StreamExt;
use t3fs_client::{BatchConfig, Client, ReadReq, RegionRead};
use t3fs_common::bulk::Registration;
use t3fs_common::proto;
use tokio::task::JoinSet;

use crate::error::ensure;
use crate::records::{client_err, close_written, create_empty, open_file};
use crate::sample_loader::{LentBuf, run_reads};
use crate::{KernelError, Result};

/// Values per token per KV head (512 latent + 64 RoPE).
pub const KV_DIM: usize = 576;
/// Tokens per page (FlashMLA's page_block_size).
pub const PAGE_TOKENS: usize = 64;
/// Block-table entry for pages a sequence does not have.
pub const UNUSED_BLOCK: i32 = 2_147_480_000;

/// Bytes of one token with `h_kv` KV heads.
pub fn token_bytes(h_kv: usize) -> usize {
    h_kv * KV_DIM * 2
}

/// Bytes of one page (one cache block) with `h_kv` KV heads.
pub fn page_bytes(h_kv: usize) -> usize {
    PAGE_TOKENS * token_bytes(h_kv)
}

/// Pages of a `seqlen`-token sequence (0 for empty or negative lengths).
fn pages_of(seqlen: i32) -> usize {
    (seqlen.max(0) as usize).div_ceil(PAGE_TOKENS)
}

/// Pages (cache blocks) a batch of sequences needs; negative lengths count as empty.
pub fn pages_needed(seqlens: &[i32]) -> usize {
    seqlens.iter().map(|&s| pages_of(s)).sum()
}

fn check_h_kv(h_kv: usize) -> Result<()> {
    ensure(h_kv >= 1 && page_bytes(h_kv) <= u32::MAX as usize, || format!("h_kv = {h_kv} (1 to 58254)"))
}

/// Writes one sequence's cache to `path` (created, or emptied if it exists): `tokens_bf16` holds
/// `seqlen × h_kv × 576` bf16 values as u16 bits, token-major.
pub async fn write_sequence(client: &Client, path: &str, h_kv: usize, tokens_bf16: &[u16]) -> Result<()> {
    check_h_kv(h_kv)?;
    let per_token = h_kv * KV_DIM;
    ensure(tokens_bf16.len().is_multiple_of(per_token), || {
        format!("{} values are not a whole number of {per_token}-value tokens", tokens_bf16.len())
    })?;
    let bytes: Vec<u8> = tokens_bf16.iter().flat_map(|v| v.to_le_bytes()).collect();
    let inode = create_empty(client, path).await?;
    if !bytes.is_empty() {
        client.write(&inode, 0, &bytes).await?;
    }
    close_written(client, &inode, bytes.len() as u64).await?;
    Ok(())
}

/// Where a batch's pages went: what an MLA decode call takes besides q and the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvBatchPlan {
    /// Tokens per sequence (FlashMLA's `cache_seqlens`).
    pub seqlens: Vec<i32>,
    /// `[b][max_blocks_per_seq]`, row-major: the block of each page, [`UNUSED_BLOCK`] past the last.
    pub block_table: Vec<i32>,
    /// Columns of `block_table`: the most pages any sequence has, at least 1.
    pub max_blocks_per_seq: usize,
    /// Blocks used, `0..num_blocks` (the cache must hold at least this many).
    pub num_blocks: usize,
}

impl KvBatchPlan {
    /// The block holding page `page` of sequence `seq`, `None` if that page does not exist.
    pub fn block(&self, seq: usize, page: usize) -> Option<usize> {
        if seq >= self.seqlens.len() || page >= pages_of(self.seqlens[seq]) {
            return None;
        }
        Some(self.block_table[seq * self.max_blocks_per_seq + page] as usize)
    }
}

/// Assigns blocks in order: sequence 0's pages get blocks `0..`, then sequence 1's, and so on.
pub fn plan_blocks(seqlens: &[i32]) -> Result<KvBatchPlan> {
    if let Some((i, s)) = seqlens.iter().enumerate().find(|&(_, &s)| s < 0) {
        return Err(KernelError::InvalidArgument(format!("sequence {i} has negative length {s}")));
    }
    let mbs = seqlens.iter().map(|&s| pages_of(s)).max().unwrap_or(0).max(1);
    let mut block_table = vec![UNUSED_BLOCK; seqlens.len() * mbs];
    let mut next = 0usize;
    for (b, &s) in seqlens.iter().enumerate() {
        for p in 0..pages_of(s) {
            block_table[b * mbs + p] = i32::try_from(next)
                .ok()
                .filter(|&v| v < UNUSED_BLOCK)
                .ok_or_else(|| KernelError::InvalidArgument(format!("more than {UNUSED_BLOCK} blocks")))?;
            next += 1;
        }
    }
    Ok(KvBatchPlan { seqlens: seqlens.to_vec(), block_table, max_blocks_per_seq: mbs, num_blocks: next })
}

/// Loads the sequences at `paths` into `dest`, a paged cache in host memory (a `Vec<u8>`, a pinned
/// buffer, ...) of at least `num_blocks × page_bytes(h_kv)` bytes (block `k` at
/// `dest[k · page_bytes..]`), and returns the plan (seqlens and block table) for the decode call
/// together with `dest`. Bytes of a block past a sequence's end are left as they are.
///
/// `dest` is taken by value because the reads write into it from their own tasks (module note):
/// if this future is dropped, or fails, while reads are in flight, they keep `dest` alive and it
/// is dropped (a pooled buffer: returned to its pool) when the last of them finishes. On error it
/// is not handed back.
pub async fn load_batch<B>(
    client: &Arc<Client>,
    paths: &[String],
    h_kv: usize,
    dest: B,
    cfg: BatchConfig,
) -> Result<(KvBatchPlan, B)>
where
    B: DerefMut<Target = [u8]> + Send + 'static,
{
    let pb = page_bytes(h_kv);
    let Loading { plan, inodes, pages } = plan_load(client, paths, h_kv).await?;
    let need = plan.num_blocks.checked_mul(pb);
    ensure(need.is_some_and(|n| n <= dest.len()), || {
        format!("the cache holds {} bytes; {} blocks of {pb} bytes are needed", dest.len(), plan.num_blocks)
    })?;

    // SAFETY (memory): the reads run in spawned tasks (t3fs_client::batch), so they must own what
    // they write into: the cache is lent, block range by block range, and every read's
    // ExternalBuf co-owns it (module note). Blocks go in increasing order, so the ranges are
    // lent in order and disjoint; each covers only the page's `len` bytes.
    let mut lent = LentBuf::new(dest);
    let (pages_ref, inodes_ref, lent_ref) = (&pages, &inodes, &mut lent);
    let reqs = (0..pages.len()).map(move |block| {
        let (s, p, len) = pages_ref[block];
        ReadReq {
            inode: inodes_ref[s].clone(),
            offset: (p * pb) as u64,
            len: len as u32,
            buf: lent_ref.lend(block * pb..block * pb + len).into(),
            user_data: block as u64,
        }
    });
    let mut reader = client.batch_reader(cfg);
    run_reads(&mut reader, reqs, |c| {
        let block = c.user_data as usize;
        let (s, p, want) = pages[block];
        let name = || format!("{}: page {p}", paths[s]);
        let n = c.result.map_err(|e| client_err(&name(), e))?;
        if n != want {
            return Err(KernelError::Format(format!("{}: read {n} of {want} bytes (file truncated?)", name())));
        }
        Ok(())
    })
    .await?;
    // Every completion was received and dropped (run_reads returned Ok with nothing pending), so
    // no read holds the cache any more.
    let dest = lent.reclaim().ok().expect("every page read completed and released its block");
    Ok((plan, dest))
}

/// What a batch load reads: the plan, each sequence's inode, and `(sequence, page, bytes)` of
/// every block, indexed by block.
struct Loading {
    plan: KvBatchPlan,
    inodes: Vec<Arc<proto::Inode>>,
    pages: Vec<(usize, usize, usize)>,
}

/// Stats the sequences, checks their lengths and assigns blocks.
async fn plan_load(client: &Arc<Client>, paths: &[String], h_kv: usize) -> Result<Loading> {
    check_h_kv(h_kv)?;
    let (tb, pb) = (token_bytes(h_kv), page_bytes(h_kv));
    let inodes = stat_all(client, paths).await?;
    let mut seqlens = Vec::with_capacity(paths.len());
    for (path, inode) in paths.iter().zip(&inodes) {
        if !inode.length.is_multiple_of(tb as u64) {
            return Err(KernelError::Format(format!(
                "{path}: {} bytes is not a whole number of {tb}-byte tokens (h_kv = {h_kv})",
                inode.length
            )));
        }
        let tokens = inode.length / tb as u64;
        seqlens.push(i32::try_from(tokens).map_err(|_| KernelError::Format(format!("{path}: {tokens} tokens")))?);
    }
    let plan = plan_blocks(&seqlens)?;
    let mut pages = Vec::with_capacity(plan.num_blocks);
    for (s, inode) in inodes.iter().enumerate() {
        for p in 0..pages_of(seqlens[s]) {
            debug_assert_eq!(plan.block(s, p), Some(pages.len()));
            pages.push((s, p, (inode.length - (p * pb) as u64).min(pb as u64) as usize));
        }
    }
    Ok(Loading { plan, inodes, pages })
}

/// Loads the sequences at `paths` into a paged cache in registered memory `reg` (block `k` at
/// byte `k · page_bytes(h_kv)` of it), usually GPU memory registered for GPUDirect RDMA
/// ([`crate::gpu::direct`]): each page is one [`Client::read_to_region`], at most `depth` at
/// once, and `apply` is called with each page's [`t3fs_client::RegionRead`] to copy in what did
/// not land in place (inline payloads) and zero its holes (a sparse file). Returns the plan. Bytes of a block past a sequence's end are never named by a read.
///
/// The reads borrow `reg` and run on this task, so dropping this future stops them; a storage
/// node may still complete an RDMA write already issued, so the memory behind `reg` must outlive
/// the registration (the [`t3fs_common::bulk::Registration`] contract) as usual.
pub async fn load_batch_to_region<A>(
    client: &Arc<Client>,
    paths: &[String],
    h_kv: usize,
    reg: &Registration,
    depth: usize,
    mut apply: A,
) -> Result<KvBatchPlan>
where
    A: FnMut(&RegionRead) -> Result<()>,
{
    let pb = page_bytes(h_kv);
    let Loading { plan, inodes, pages } = plan_load(client, paths, h_kv).await?;
    ensure(plan.num_blocks.checked_mul(pb).is_some_and(|n| n <= reg.len()), || {
        format!("the region holds {} bytes; {} blocks of {pb} bytes are needed", reg.len(), plan.num_blocks)
    })?;
    let (inodes, pages_ref) = (&inodes, &pages);
    let mut reads = futures::stream::iter(0..pages.len())
        .map(|block| async move {
            let (s, _, len) = pages_ref[block];
            let r =
                client.read_to_region(&inodes[s], (pages_ref[block].1 * pb) as u64, len as u32, reg, block * pb).await;
            (block, r)
        })
        .buffer_unordered(depth.max(1));
    while let Some((block, r)) = reads.next().await {
        let (s, p, want) = pages[block];
        let name = || format!("{}: page {p}", paths[s]);
        let read = r.map_err(|e| client_err(&name(), e))?;
        if read.len != want {
            return Err(KernelError::Format(format!(
                "{}: read {} of {want} bytes (file truncated?)",
                name(),
                read.len
            )));
        }
        apply(&read)?;
    }
    Ok(plan)
}

/// Resolves every path concurrently; inodes in the order of `paths`.
async fn stat_all(client: &Arc<Client>, paths: &[String]) -> Result<Vec<Arc<proto::Inode>>> {
    let mut stats = JoinSet::new();
    for (i, p) in paths.iter().enumerate() {
        let (client, p) = (client.clone(), p.clone());
        stats.spawn(async move { (i, open_file(&client, &p).await) });
    }
    let mut out = vec![None; paths.len()];
    while let Some(r) = stats.join_next().await {
        let (i, inode) = match r {
            Ok(r) => r,
            // Never cancelled; a panic in the client is passed on as it is.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        out[i] = Some(inode?);
    }
    Ok(out.into_iter().map(|i| i.expect("every stat task reported")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i32 = UNUSED_BLOCK;

    #[test]
    fn sizes_match_flashmla_pages() {
        assert_eq!(token_bytes(1), 1152);
        assert_eq!(page_bytes(1), 73_728);
        assert_eq!(page_bytes(2), 147_456);
        assert_eq!(pages_needed(&[1, 64, 130]), 5);
        assert_eq!(pages_needed(&[0, 63, 65, -3]), 3);
        assert_eq!(pages_needed(&[]), 0);
        assert!(check_h_kv(0).is_err());
        assert!(check_h_kv(58_254).is_ok());
        assert!(check_h_kv(58_255).is_err());
    }

    #[test]
    fn blocks_are_assigned_in_order_and_unused_slots_hold_the_sentinel() {
        let plan = plan_blocks(&[1, 64, 130]).unwrap();
        assert_eq!(plan.max_blocks_per_seq, 3);
        assert_eq!(plan.num_blocks, 5);
        assert_eq!(plan.block_table, vec![0, S, S, 1, S, S, 2, 3, 4]);
        assert_eq!(plan.block(2, 2), Some(4));
        assert_eq!(plan.block(0, 1), None);
        assert_eq!(plan.block(3, 0), None);
        // Empty sequences take no block; an all-empty batch still has one column.
        let plan = plan_blocks(&[0, 65, 0, 64]).unwrap();
        assert_eq!(plan.block_table, vec![S, S, 0, 1, S, S, 2, S]);
        assert_eq!(plan.num_blocks, 3);
        let plan = plan_blocks(&[0, 0]).unwrap();
        assert_eq!((plan.max_blocks_per_seq, plan.num_blocks, plan.block_table), (1, 0, vec![S, S]));
        assert!(plan_blocks(&[]).unwrap().block_table.is_empty());
        assert!(matches!(plan_blocks(&[3, -1]), Err(KernelError::InvalidArgument(m)) if m.contains("sequence 1")));
        // Every page of every sequence has exactly one block, and blocks are 0..num_blocks.
        let lens = [5, 700, 64, 0, 129, 1];
        let plan = plan_blocks(&lens).unwrap();
        let mut seen = vec![false; plan.num_blocks];
        for (s, &l) in lens.iter().enumerate() {
            for p in 0..pages_of(l) {
                let b = plan.block(s, p).unwrap();
                assert!(!std::mem::replace(&mut seen[b], true));
            }
        }
        assert!(seen.iter().all(|&x| x));
        assert_eq!(plan.num_blocks, pages_needed(&lens));
    }
}
