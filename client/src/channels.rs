//! Exactly-once update channels, client side (server side: storage/src/service/channels.rs).
//!
//! A client owns up to [`MAX_CHANNELS`] channels, identified by its session id (the same client id
//! mgmtd knows) and a channel number. Each new chunk update takes a free channel and that channel's
//! next sequence number, and sends every retry of the update with the same (channel, seq); the
//! chain head answers a retry of an update it already applied from its record instead of applying
//! it twice, and refuses an older seq as a stale duplicate. A channel returns to the free list when
//! its update finishes (acknowledged or given up), so at most one update per channel is in flight and
//! sequence numbers only grow. Channels are reused, lowest number first, so the head's table holds
//! few entries per client.
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Updates in flight per client, each on its own channel.
pub const MAX_CHANNELS: usize = 256;

/// One channel: its number and the last sequence number it used.
#[derive(Debug)]
struct Channel {
    id: u32,
    seq: u64,
}

/// A client's channels.
pub struct UpdateChannels {
    client_id: Bytes,
    slots: Semaphore,
    free: Mutex<Vec<Channel>>,
    next_id: Mutex<u32>,
}

/// A channel held for one update (and all its retries); returns itself on drop.
pub struct ChannelLease<'a> {
    owner: &'a UpdateChannels,
    ch: Option<Channel>,
    _slot: SemaphorePermit<'a>,
}

impl UpdateChannels {
    pub fn new(client_id: impl Into<Bytes>) -> Self {
        Self {
            client_id: client_id.into(),
            slots: Semaphore::new(MAX_CHANNELS),
            free: Mutex::default(),
            next_id: Mutex::new(1),
        }
    }

    pub fn client_id(&self) -> &Bytes {
        &self.client_id
    }

    /// Takes a free channel (waiting while all are in use) and advances its sequence number.
    pub async fn acquire(&self) -> ChannelLease<'_> {
        let slot = self.slots.acquire().await.expect("the channel semaphore is never closed");
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            // Lowest id first: keeps the set of channels the heads track small.
            let best = free.iter().enumerate().min_by_key(|(_, c)| c.id).map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        let mut ch = reused.unwrap_or_else(|| {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            let id = *next;
            *next += 1;
            Channel { id, seq: 0 }
        });
        ch.seq += 1;
        ChannelLease { owner: self, ch: Some(ch), _slot: slot }
    }
}

impl ChannelLease<'_> {
    pub fn channel_id(&self) -> u32 {
        self.ch.as_ref().map_or(0, |c| c.id)
    }

    pub fn seq(&self) -> u64 {
        self.ch.as_ref().map_or(0, |c| c.seq)
    }

    pub fn client_id(&self) -> &Bytes {
        &self.owner.client_id
    }
}

impl Drop for ChannelLease<'_> {
    fn drop(&mut self) {
        if let Some(ch) = self.ch.take() {
            self.owner.free.lock().unwrap_or_else(|p| p.into_inner()).push(ch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channels_are_exclusive_reused_and_their_seq_only_grows() {
        let c = UpdateChannels::new("me");
        let a = c.acquire().await;
        let b = c.acquire().await;
        assert_ne!(a.channel_id(), b.channel_id());
        assert_eq!((a.seq(), b.seq()), (1, 1));
        let a_id = a.channel_id();
        drop(a);
        let again = c.acquire().await;
        assert_eq!(again.channel_id(), a_id, "lowest free channel reused");
        assert_eq!(again.seq(), 2);
        drop((again, b));
        // Bounded: MAX_CHANNELS leases at once, the next waits.
        let mut held = Vec::new();
        for _ in 0..MAX_CHANNELS {
            held.push(c.acquire().await);
        }
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), c.acquire()).await.is_err());
        let ids: std::collections::HashSet<u32> = held.iter().map(|l| l.channel_id()).collect();
        assert_eq!(ids.len(), MAX_CHANNELS);
        held.pop();
        assert!(c.acquire().await.seq() >= 1);
    }
}
