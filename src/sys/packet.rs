//! The AF_PACKET socket that sends every gratuitous ARP, and the `sockaddr_ll` naming the link a
//! frame leaves by.

use std::io;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

use crate::kernel::KernelError;
use crate::types::IfIndex;

/// Send buffer of the GARP socket.
const PACKET_SNDBUF: usize = 1 << 20;

/// One raw, non-blocking packet socket for all links: each frame names its link in its address.
pub(super) struct PacketSocket {
    sock: Socket,
}

impl PacketSocket {
    pub(super) fn open() -> Result<Self, KernelError> {
        let sock = Socket::new(Domain::PACKET, Type::RAW.nonblocking().cloexec(), None)
            .map_err(KernelError::PacketSocket)?;
        // Room for a takeover's burst of GARPs; beyond it the daemon paces and retries.
        let _ = sock.set_send_buffer_size(PACKET_SNDBUF);
        Ok(PacketSocket { sock })
    }

    /// Sends one Ethernet frame out of `ifindex`; a full send buffer is `Send` with `WouldBlock`.
    pub(super) fn send(&self, ifindex: IfIndex, frame: &[u8]) -> Result<(), KernelError> {
        let addr = packet_addr(ifindex, frame).map_err(KernelError::PacketSocket)?;
        self.sock
            .send_to(frame, &addr)
            .map(|_| ())
            .map_err(|source| KernelError::Send { ifindex, source })
    }
}

/// `sockaddr_ll` for sending `frame` (an Ethernet frame) out of `ifindex`.
fn packet_addr(ifindex: IfIndex, frame: &[u8]) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex.0)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: sockaddr_ll is a plain C struct of integers and a byte array; all-zero bytes are a
    // valid value of it (and the conventional starting point: unused fields must be zero).
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    let ethertype = frame
        .get(12..14)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    ll.sll_protocol = ethertype.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    if let Some(dst) = frame.get(0..6) {
        ll.sll_addr[..6].copy_from_slice(dst);
    }
    let mut storage = SockAddrStorage::zeroed();
    let len = std::mem::size_of::<libc::sockaddr_ll>();
    // SAFETY: `storage` is a sockaddr_storage (128 bytes, aligned for any sockaddr) and
    // sockaddr_ll is 20 bytes, so copying `len` bytes from `ll` reads and writes only inside the
    // two, which are distinct locals and so do not overlap; u8 pointers need no alignment.
    // SockAddr::new is unsafe because the storage must hold a valid address of `len` bytes of the
    // family it names: it holds exactly the bytes of an initialised sockaddr_ll whose sll_family
    // is AF_PACKET, and `len` is that struct's size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&ll as *const libc::sockaddr_ll).cast::<u8>(),
            (&mut storage as *mut SockAddrStorage).cast::<u8>(),
            len,
        );
        Ok(SockAddr::new(storage, len as libc::socklen_t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_names_the_link_the_ethertype_and_the_destination() {
        let mut frame = [0u8; 42];
        frame[0..6].copy_from_slice(&[0xff; 6]);
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        let a = packet_addr(IfIndex(7), &frame).unwrap();
        assert_eq!(a.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(a.len() as usize, std::mem::size_of::<libc::sockaddr_ll>());
        // SAFETY: the address is an AF_PACKET one of sockaddr_ll's length (checked above), its
        // storage is a sockaddr_storage, aligned for any sockaddr, and `a` outlives the reference.
        let ll = unsafe { &*(a.as_ptr() as *const libc::sockaddr_ll) };
        assert_eq!(ll.sll_ifindex, 7);
        assert_eq!(u16::from_be(ll.sll_protocol), 0x0806);
        assert_eq!(ll.sll_halen, 6);
        assert_eq!(ll.sll_addr, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    }

    #[test]
    fn an_ifindex_beyond_i32_is_refused() {
        let e = packet_addr(IfIndex(u32::MAX), &[0u8; 42]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
