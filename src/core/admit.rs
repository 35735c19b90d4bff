//! What a datagram must pass before it counts: it decodes; it came from the segment (TTL 255,
//! not in through a gateway interface), or with `--peer` from a listed peer's address (any TTL:
//! routed); and, with a key, it is signed with a known key and the signature verifies. Everything else is dropped, counted by reason, and logged (rate-limited)
//! with the sender's address.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{trace, warn};

use super::Core;
use crate::auth::AuthMode;
use crate::types::IfIndex;
use crate::wire::{self, Extensions, Frame, Signature};

/// A datagram that passed every check.
pub(super) struct Admitted {
    pub(super) frame: Frame,
    pub(super) ext: Extensions,
    /// Signed, and verified with our keys.
    pub(super) signed: bool,
}

impl Core {
    /// Decodes a datagram and lets it count only if it passes every check: well-formed, from
    /// the segment, and (with a key) signed with a known key. Each drop is counted by reason and
    /// logged at most once per 10 s.
    pub(super) fn admit(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        ttl: Option<u8>,
        ifindex: Option<IfIndex>,
        now: Instant,
    ) -> Option<Admitted> {
        let wire::Decoded { frame, sig, ext } = match wire::decode_full(bytes) {
            Ok(d) => d,
            Err(e) => {
                let n = self.stats.frames_malformed.entry(e.kind()).or_default();
                *n += 1;
                let total: u64 = self.stats.frames_malformed.values().sum();
                if self.logs.malformed.ready(now) {
                    warn!(from = %from, error = %e, malformed = total, "malformed heartbeat dropped");
                } else {
                    trace!(from = %from, error = %e, "malformed heartbeat dropped");
                }
                return None;
            }
        };
        let reason = self
            .reject(&frame, from, ttl, ifindex)
            .or_else(|| self.authenticate(bytes, &frame, sig));
        if let Some(reason) = reason {
            *self.stats.frames_rejected.entry(reason).or_default() += 1;
            if self.logs.rejected.ready(now) {
                warn!(%from, reason, ?ttl, ?ifindex, rejected = self.stats.frames_rejected.values().sum::<u64>(), "heartbeat rejected");
            }
            return None;
        }
        Some(Admitted {
            frame,
            ext,
            signed: sig.is_some() && self.keys.is_some(),
        })
    }

    /// Why a decoded frame must be dropped before it counts, if it must: a version-1 frame that
    /// was routed (TTL below 255: it was not sent on this segment, or not by a wmgwd2 of this
    /// version), or any frame that came in on a managed gateway interface (sent into an overlay,
    /// to the gateway address: a tenant, not a gateway). Legacy frames carry no TTL promise (the Go
    /// original sends 64). With `--peer`, only the listed addresses count (`not_peer`), and their
    /// frames may have been routed: no TTL rule (the key is what proves them, docs/security.md).
    fn reject(
        &self,
        frame: &Frame,
        from: SocketAddr,
        ttl: Option<u8>,
        ifindex: Option<IfIndex>,
    ) -> Option<&'static str> {
        if !self.cfg.peers.is_empty() {
            if !self.cfg.is_peer(from.ip()) {
                return Some("not_peer");
            }
        } else if matches!(frame, Frame::Heartbeat(_))
            && ttl.is_some_and(|t| t != wire::REQUIRED_TTL)
        {
            return Some("ttl");
        }
        let i = ifindex?;
        let managed = self.links.is_managed(i);
        let elsewhere = self.links.uplink_index().is_some_and(|u| u != i);
        (managed || elsewhere).then_some("interface")
    }

    /// With a key: a signed frame must verify; an unsigned one is refused in `require` mode, and
    /// a legacy one always (it cannot be signed). Without a key, signed frames are taken as they
    /// are (a fleet being keyed one gateway at a time must keep hearing the keyed ones).
    fn authenticate(
        &self,
        bytes: &[u8],
        frame: &Frame,
        sig: Option<Signature>,
    ) -> Option<&'static str> {
        let keys = self.keys.as_ref()?;
        match (sig, frame) {
            (Some(s), _) => keys
                .verify(s.key_id, &bytes[..s.signed_len], &bytes[s.signed_len..])
                .err()
                .map(|e| e.kind()),
            (None, Frame::Legacy { .. }) => Some("legacy"),
            (None, Frame::Heartbeat(_)) => {
                (self.cfg.auth_mode == AuthMode::Require).then_some("unsigned")
            }
        }
    }
}
