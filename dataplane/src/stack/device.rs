//! The smoltcp device a stream's socket set is polled with: at most one incoming packet (the
//! one the engine just opened), and the egress ring for what smoltcp sends.

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

use super::egress::Egress;
use crate::crypto::PublicKey;

/// One packet in, the ring out.
pub(super) struct Device<'a> {
    rx: Option<&'a [u8]>,
    egress: &'a mut Egress,
    peer: PublicKey,
    mtu: usize,
    /// Set when smoltcp wanted to send and the ring was full.
    pub(super) refused: bool,
}

impl<'a> Device<'a> {
    pub(super) fn new(
        rx: Option<&'a [u8]>,
        egress: &'a mut Egress,
        peer: PublicKey,
        mtu: usize,
    ) -> Self {
        Self {
            rx,
            egress,
            peer,
            mtu,
            refused: false,
        }
    }
}

/// What every stream's device can do: IP packets up to the route MTU, no checksums. The
/// route's ChaCha20-Poly1305 tag already proves every byte between the two stacks, so
/// checksums would only cost time (both ends are skywire stacks; nothing else sees these
/// packets).
pub(super) fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    caps.max_burst_size = None;
    caps.checksum = ChecksumCapabilities::ignored();
    caps
}

impl phy::Device for Device<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: SmolInstant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.take()?;
        Some((
            RxToken(packet),
            TxToken {
                egress: self.egress,
                peer: self.peer,
            },
        ))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<TxToken<'_>> {
        if self.egress.is_full() {
            self.refused = true;
            return None;
        }
        Some(TxToken {
            egress: self.egress,
            peer: self.peer,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

/// The packet being received.
pub(super) struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

/// Room for one packet in the egress ring.
pub(super) struct TxToken<'a> {
    egress: &'a mut Egress,
    peer: PublicKey,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.egress.push_with(self.peer, len, f)
    }
}
