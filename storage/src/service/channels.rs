//! Exactly-once client updates: per-client update channels, as 3FS runs them (research/3fs.md §4).
//!
//! A client owns a bounded set of channels (client/src/channels.rs). Each new update it sends takes
//! a free channel and that channel's next sequence number; a retry of the same update resends the
//! same (client id, channel id, seq). The head records, per (client, channel), the last sequence
//! number it admitted and, once that update succeeded, its response:
//!
//! - seq above the record (or no record): a new update, applied;
//! - seq equal and the recorded update succeeded: a retry whose response was lost; answered with
//!   the recorded response (`replayed = true`) without applying anything again;
//! - seq equal and the update is still running: `Busy` (retryable; the client tries again later);
//! - seq equal and the update failed: applied again (a failed update changed nothing at the head
//!   that a retry would repeat: the version check makes a re-sent forward a duplicate downstream);
//! - seq below the record: a stale duplicate, refused with `DuplicateUpdate` and not applied.
//!
//! A retry must be the same update: the record keeps the chunk, type, offset and payload CRC, and a
//! same-seq request that differs is refused (InvalidArgument).
//!
//! Only client writes at the head are admitted through channels (`update_version == 0`, not sync,
//! client id set). Forwarded updates carry the fields along, and every successor records them too
//! ([`UpdateChannels::record_forwarded`]) once the update is committed there (at the tail when
//! applied; on a middle hop once its successor acknowledged). So when the head fails after applying
//! an update whose answer the client never got, the new head (its old successor) already has the
//! record and answers the client's retry with it instead of applying the update a second time
//! (3FS has this window open). The table is per storage node, in memory: a restarted node has no
//! record, nor has a successor whose part of the chain failed before it committed; a retry that
//! reaches such a node is applied again (the chain's version check keeps replicas identical either
//! way, and resending the same write leaves the same bytes).
//!
//! Bounds: at most [`MAX_ENTRIES`] channels are tracked; entries idle for [`IDLE_EXPIRY`] are
//! dropped (a client that comes back after that is treated as new, which is safe because its next
//! seq is above anything it sent before). When the table is full of live entries a new channel is
//! refused with `Busy`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use t3fs_common::proto::{BulkResponse, UpdateChunk};
use t3fs_common::{Error, StatusCode};

/// Most channels tracked per node.
pub const MAX_ENTRIES: usize = 1 << 16;
/// Channels idle this long are forgotten.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(600);
/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 64;

type Key = (Bytes, u32);

/// What identifies "the same update" across retries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    chunk: Bytes,
    ty: i32,
    offset: u32,
    crc: u32,
    chain: u32,
}

impl Fingerprint {
    fn of(u: &UpdateChunk) -> Self {
        Self {
            chunk: u.chunk_id.clone(),
            ty: u.update_type,
            offset: u.offset,
            crc: u.payload_crc32c,
            chain: u.chain_id,
        }
    }
}

enum State {
    Running,
    Done(BulkResponse),
    Failed,
}

struct Entry {
    seq: u64,
    what: Fingerprint,
    state: State,
    used: Instant,
}

/// The node's channel table.
#[derive(Default)]
pub struct UpdateChannels {
    table: Arc<Mutex<HashMap<Key, Entry>>>,
    replays: std::sync::atomic::AtomicU64,
}

/// An admitted update; records its result on [`Ticket::finish`], or marks it failed if dropped.
pub struct Ticket {
    table: Arc<Mutex<HashMap<Key, Entry>>>,
    key: Key,
    seq: u64,
    done: bool,
}

/// The verdict for one request.
pub enum Admit {
    /// Not a channel update: run it as is.
    Untracked,
    /// Run it, then [`Ticket::finish`].
    Fresh(Ticket),
    /// Already applied: answer this.
    Replay(BulkResponse),
}

impl UpdateChannels {
    /// Updates answered from the table so far.
    pub fn replays(&self) -> u64 {
        self.replays.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Channels tracked now.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides what to do with `u` (module note).
    pub fn admit(&self, u: &UpdateChunk) -> Result<Admit, Error> {
        self.admit_at(u, Instant::now())
    }

    fn admit_at(&self, u: &UpdateChunk, now: Instant) -> Result<Admit, Error> {
        if u.client_id.is_empty() || u.update_version != 0 || u.sync || u.repair {
            return Ok(Admit::Untracked);
        }
        if u.client_id.len() > MAX_CLIENT_ID {
            return Err(Error::invalid(format!("client id of {} bytes (limit {MAX_CLIENT_ID})", u.client_id.len())));
        }
        if u.seq == 0 {
            return Err(Error::invalid("an update channel's sequence numbers start at 1"));
        }
        let key = (u.client_id.clone(), u.channel_id);
        let what = Fingerprint::of(u);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = table.get_mut(&key) {
            e.used = now;
            if u.seq < e.seq {
                return Err(Error::new(
                    StatusCode::DuplicateUpdate,
                    format!("channel {} is at seq {}; seq {} is a stale duplicate", u.channel_id, e.seq, u.seq),
                ));
            }
            if u.seq == e.seq {
                if e.what != what {
                    return Err(Error::invalid(format!(
                        "channel {} seq {} was a different update; a retry must resend the same one",
                        u.channel_id, u.seq
                    )));
                }
                match &e.state {
                    State::Running => {
                        return Err(Error::new(
                            StatusCode::Busy,
                            format!("channel {} seq {} is still being applied", u.channel_id, u.seq),
                        ));
                    }
                    State::Done(rsp) => {
                        self.replays.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(Admit::Replay(BulkResponse { replayed: true, ..rsp.clone() }));
                    }
                    State::Failed => {}
                }
            } else if matches!(e.state, State::Running) {
                return Err(Error::new(
                    StatusCode::Busy,
                    format!("channel {} has seq {} still running", u.channel_id, e.seq),
                ));
            }
            *e = Entry { seq: u.seq, what, state: State::Running, used: now };
        } else {
            if table.len() >= MAX_ENTRIES {
                table.retain(|_, e| matches!(e.state, State::Running) || now.duration_since(e.used) < IDLE_EXPIRY);
            }
            if table.len() >= MAX_ENTRIES {
                return Err(Error::new(StatusCode::Busy, "update channel table is full"));
            }
            table.insert(key.clone(), Entry { seq: u.seq, what, state: State::Running, used: now });
        }
        Ok(Admit::Fresh(Ticket { table: self.table.clone(), key, seq: u.seq, done: false }))
    }

    /// Records a forwarded update (`update_version > 0`, not sync, with a channel) committed on this
    /// successor, with the response this node gives for it, so a retry that reaches this node after
    /// it became head is replayed. Never moves a channel back to an older seq, never touches an entry
    /// this node is running as head, and gives up silently when the table is full of live entries
    /// (the retry is then applied again, as before this record existed).
    pub fn record_forwarded(&self, u: &UpdateChunk, rsp: &BulkResponse) {
        if u.client_id.is_empty() || u.client_id.len() > MAX_CLIENT_ID || u.seq == 0 || u.update_version == 0 || u.sync
        {
            return;
        }
        let now = Instant::now();
        let key = (u.client_id.clone(), u.channel_id);
        let entry = Entry { seq: u.seq, what: Fingerprint::of(u), state: State::Done(rsp.clone()), used: now };
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match table.get_mut(&key) {
            Some(e) if e.seq > u.seq || matches!(e.state, State::Running) => {}
            Some(e) => *e = entry,
            None => {
                if table.len() >= MAX_ENTRIES {
                    table.retain(|_, e| matches!(e.state, State::Running) || now.duration_since(e.used) < IDLE_EXPIRY);
                }
                if table.len() < MAX_ENTRIES {
                    table.insert(key, entry);
                }
            }
        }
    }

    /// Drops entries idle longer than [`IDLE_EXPIRY`] (also done lazily when the table fills).
    pub fn expire(&self) {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, e| matches!(e.state, State::Running) || now.duration_since(e.used) < IDLE_EXPIRY);
    }
}

impl Ticket {
    /// Records the update's result: a success is replayed to retries, a failure lets a retry run again.
    pub fn finish(mut self, res: &Result<(BulkResponse, Bytes), Error>) {
        self.set(match res {
            Ok((rsp, _)) => State::Done(rsp.clone()),
            Err(_) => State::Failed,
        });
    }

    fn set(&mut self, state: State) {
        self.done = true;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = table.get_mut(&self.key).filter(|e| e.seq == self.seq) {
            e.state = state;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            // The request was cancelled mid-way: whether it applied is unknown to the table, so a
            // retry runs again (the chunk version check makes that safe).
            self.set(State::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use t3fs_common::proto::ChunkMeta;

    fn upd(client: &str, channel: u32, seq: u64, crc: u32) -> UpdateChunk {
        UpdateChunk {
            client_id: Bytes::copy_from_slice(client.as_bytes()),
            channel_id: channel,
            seq,
            payload_crc32c: crc,
            chunk_id: Bytes::from_static(b"chunk"),
            ..Default::default()
        }
    }

    fn ok(version: u64) -> Result<(BulkResponse, Bytes), Error> {
        let meta = ChunkMeta { version, ..Default::default() };
        Ok((BulkResponse { meta: Some(meta), ..Default::default() }, Bytes::new()))
    }

    fn fresh(c: &UpdateChannels, u: &UpdateChunk) -> Ticket {
        match c.admit(u) {
            Ok(Admit::Fresh(t)) => t,
            Ok(Admit::Replay(_)) => panic!("replayed"),
            Ok(Admit::Untracked) => panic!("untracked"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    #[test]
    fn retry_replays_the_recorded_result_and_old_seq_is_refused() {
        let c = UpdateChannels::default();
        fresh(&c, &upd("a", 1, 1, 7)).finish(&ok(1));
        // The response was lost; the retry gets the recorded one without running again.
        match c.admit(&upd("a", 1, 1, 7)).unwrap() {
            Admit::Replay(rsp) => {
                assert!(rsp.replayed);
                assert_eq!(rsp.meta.unwrap().version, 1);
            }
            _ => panic!("retry was not replayed"),
        }
        assert_eq!(c.replays(), 1);
        fresh(&c, &upd("a", 1, 2, 8)).finish(&ok(2));
        assert_eq!(c.admit(&upd("a", 1, 1, 7)).err().unwrap().code, StatusCode::DuplicateUpdate);
        // Other channels and clients are independent.
        fresh(&c, &upd("a", 2, 1, 7)).finish(&ok(3));
        fresh(&c, &upd("b", 1, 1, 7)).finish(&ok(4));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn running_failed_and_mismatched_retries() {
        let c = UpdateChannels::default();
        let t = fresh(&c, &upd("a", 1, 5, 7));
        assert_eq!(c.admit(&upd("a", 1, 5, 7)).err().unwrap().code, StatusCode::Busy);
        assert_eq!(c.admit(&upd("a", 1, 6, 7)).err().unwrap().code, StatusCode::Busy);
        t.finish(&Err(Error::unavailable("forward failed")));
        // A failed update runs again on retry.
        let t = fresh(&c, &upd("a", 1, 5, 7));
        // A request dropped mid-way counts as failed.
        drop(t);
        fresh(&c, &upd("a", 1, 5, 7)).finish(&ok(1));
        // Same seq, different payload: refused.
        assert_eq!(c.admit(&upd("a", 1, 5, 9)).err().unwrap().code, StatusCode::InvalidArgument);
        assert_eq!(c.admit(&upd("a", 1, 0, 9)).err().unwrap().code, StatusCode::InvalidArgument);
    }

    #[test]
    fn untracked_updates_and_expiry() {
        let c = UpdateChannels::default();
        assert!(matches!(c.admit(&upd("", 1, 1, 0)).unwrap(), Admit::Untracked));
        let fwd = UpdateChunk { update_version: 3, ..upd("a", 1, 1, 0) };
        assert!(matches!(c.admit(&fwd).unwrap(), Admit::Untracked));
        let long = upd(&"x".repeat(MAX_CLIENT_ID + 1), 1, 1, 0);
        assert!(c.admit(&long).is_err());
        let past = Instant::now();
        match c.admit_at(&upd("a", 1, 1, 0), past).unwrap() {
            Admit::Fresh(t) => t.finish(&ok(1)),
            _ => panic!("not fresh"),
        }
        assert_eq!(c.len(), 1);
        // Fill past the bound with entries that are already idle: the next insert sweeps them.
        let old = past.checked_sub(IDLE_EXPIRY * 2).unwrap_or(past);
        {
            let mut t = c.table.lock().unwrap();
            for i in 0..MAX_ENTRIES as u32 {
                let what = Fingerprint::of(&upd("z", i, 1, 0));
                t.insert((Bytes::from_static(b"z"), i), Entry { seq: 1, what, state: State::Failed, used: old });
            }
        }
        fresh(&c, &upd("new", 1, 1, 0)).finish(&ok(1));
        assert!(c.len() <= 3, "idle entries were not expired: {}", c.len());
    }

    /// A forwarded update as a successor sees it: the client's channel fields, at a version.
    fn fwd(client: &str, channel: u32, seq: u64, crc: u32, version: u64) -> UpdateChunk {
        UpdateChunk { update_version: version, ..upd(client, channel, seq, crc) }
    }

    fn rsp(version: u64) -> BulkResponse {
        ok(version).unwrap().0
    }

    #[test]
    fn forwarded_updates_recorded_on_a_successor_replay_once_it_is_head() {
        let c = UpdateChannels::default();
        c.record_forwarded(&fwd("a", 1, 1, 7, 4), &rsp(4));
        // The head failed before answering; its successor, now head, gets the retry.
        match c.admit(&upd("a", 1, 1, 7)).unwrap() {
            Admit::Replay(r) => assert_eq!((r.replayed, r.meta.unwrap().version), (true, 4)),
            _ => panic!("the retry was applied again"),
        }
        // A different update under that seq is refused; the next seq is new.
        assert_eq!(c.admit(&upd("a", 1, 1, 8)).err().unwrap().code, StatusCode::InvalidArgument);
        fresh(&c, &upd("a", 1, 2, 9)).finish(&ok(5));
        // An older forwarded seq never moves the channel back.
        c.record_forwarded(&fwd("a", 1, 1, 7, 4), &rsp(4));
        assert_eq!(c.admit(&upd("a", 1, 1, 7)).err().unwrap().code, StatusCode::DuplicateUpdate);
        // An entry this node runs as head is left alone.
        let t = fresh(&c, &upd("b", 1, 3, 1));
        c.record_forwarded(&fwd("b", 1, 3, 1, 9), &rsp(9));
        assert_eq!(c.admit(&upd("b", 1, 3, 1)).err().unwrap().code, StatusCode::Busy);
        drop(t);
        // Not recorded: client updates at the head, sync updates, no channel, a bad client id.
        let before = c.len();
        c.record_forwarded(&upd("c", 1, 1, 1), &rsp(1));
        c.record_forwarded(&UpdateChunk { sync: true, ..fwd("d", 1, 1, 1, 1) }, &rsp(1));
        c.record_forwarded(&fwd("", 1, 1, 1, 1), &rsp(1));
        c.record_forwarded(&fwd(&"x".repeat(MAX_CLIENT_ID + 1), 1, 1, 1, 1), &rsp(1));
        c.record_forwarded(&fwd("e", 1, 0, 1, 1), &rsp(1));
        assert_eq!(c.len(), before);
    }
}
