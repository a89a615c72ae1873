//! A minimal rtnetlink client: add and delete routes through an interface, add addresses,
//! set a link's MTU and state, list the host's addresses. One socket per call, one request
//! per socket, and every change waits for the kernel's acknowledgement, so a refusal is an
//! `Err` here and never passes silently.
//!
//! Messages are built field by field into a byte buffer in native byte order, as the
//! kernel lays them out (`include/uapi/linux/{netlink,rtnetlink,if_addr}.h`); the layout
//! of every header is checked at compile time against libc's definition where libc has
//! one. Replies are parsed with bounds-checked reads: nothing is cast from kernel bytes.
//!
//! Errors: the kernel's errno becomes an [`io::Error`] with that raw OS error, so
//! [`add_route`] of a route that exists fails with [`io::ErrorKind::AlreadyExists`]
//! (`EEXIST`), and [`delete_route`] of a route that does not exist with
//! [`io::ErrorKind::NotFound`] (the kernel's `ESRCH`).
//!
//! One dump: [`list_addresses`] (`RTM_GETADDR`, both families), read datagram by datagram
//! until `NLMSG_DONE`; a dump the kernel marks interrupted (an address changed during it)
//! is started again.
//!
//! Also routes in any table and of any type ([`RouteSpec`]: through a device, blackhole,
//! unreachable, throw; with a metric) and policy routing rules ([`RuleSpec`]: fwmark and
//! mask, invert, table, priority), and [`delete_address`], for the VPN client's routing
//! (`docs/design/vpn-plan.md`).
//!
//! Not here: other dumps (routes, rules, links), multicast notifications, extended acks.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::route::Prefix;

/// Bytes of a netlink message header (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;
/// Bytes of `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type
/// (one byte each), then `unsigned int flags`. libc does not define it.
const RTMSG_LEN: usize = 12;
/// Bytes of `struct ifinfomsg`: family, pad, `unsigned short type`, `int index`,
/// `unsigned int flags`, `unsigned int change`.
const IFINFOMSG_LEN: usize = 16;
/// Bytes of `struct ifaddrmsg`: family, prefixlen, flags, scope, `u32 index`.
const IFADDRMSG_LEN: usize = 8;
/// Bytes of `struct nlmsgerr` up to the echoed header: `int error`.
const NLMSGERR_ERROR_LEN: usize = 4;

// Layout checks against libc: the offsets `Message` writes at are the ones the kernel reads.
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<libc::nlmsghdr>() == NLMSG_HDRLEN);
    assert!(offset_of!(libc::nlmsghdr, nlmsg_len) == 0);
    assert!(offset_of!(libc::nlmsghdr, nlmsg_type) == 4);
    assert!(offset_of!(libc::nlmsghdr, nlmsg_flags) == 6);
    assert!(offset_of!(libc::nlmsghdr, nlmsg_seq) == 8);
    assert!(offset_of!(libc::nlmsghdr, nlmsg_pid) == 12);
    assert!(size_of::<libc::ifinfomsg>() == IFINFOMSG_LEN);
    assert!(offset_of!(libc::ifinfomsg, ifi_family) == 0);
    assert!(offset_of!(libc::ifinfomsg, ifi_type) == 2);
    assert!(offset_of!(libc::ifinfomsg, ifi_index) == 4);
    assert!(offset_of!(libc::ifinfomsg, ifi_flags) == 8);
    assert!(offset_of!(libc::ifinfomsg, ifi_change) == 12);
    assert!(size_of::<libc::ifaddrmsg>() == IFADDRMSG_LEN);
    assert!(offset_of!(libc::ifaddrmsg, ifa_family) == 0);
    assert!(offset_of!(libc::ifaddrmsg, ifa_prefixlen) == 1);
    assert!(offset_of!(libc::ifaddrmsg, ifa_flags) == 2);
    assert!(offset_of!(libc::ifaddrmsg, ifa_scope) == 3);
    assert!(offset_of!(libc::ifaddrmsg, ifa_index) == 4);
    assert!(offset_of!(libc::nlmsgerr, error) == 0);
    assert!(offset_of!(libc::nlmsgerr, msg) == NLMSGERR_ERROR_LEN);
    assert!(size_of::<libc::rtattr>() == 4);
};

/// `NLM_F_*` flags are `c_int` in libc and `u16` on the wire; all fit.
const F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const F_ACK: u16 = libc::NLM_F_ACK as u16;
const F_CREATE: u16 = libc::NLM_F_CREATE as u16;
const F_EXCL: u16 = libc::NLM_F_EXCL as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
/// Attribute types carry two flag bits (nested, network byte order) above the type.
const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;

/// The receive buffer of a dump. The kernel fills each datagram of a dump up to the
/// largest buffer the reader has used, at most 32 KiB; a datagram larger than this buffer
/// would be cut, which [`recv`] reports rather than misreads.
const DUMP_BUFFER: usize = 32 * 1024;
/// How many times a dump the kernel marks interrupted is started again before giving up.
const DUMP_ATTEMPTS: usize = 5;

/// How long to wait for an acknowledgement. The kernel handles a request inside `send`, so
/// the ack is queued before `send` returns; the timeout only guards against a lost one.
const ACK_TIMEOUT_SECS: libc::time_t = 5;

/// Route `prefix` through the interface `if_index` (main table, protocol `static`, scope
/// link for IPv4: no gateway, the packets go straight into the device). Host bits of the
/// prefix are ignored. A route to the same prefix with the same metric already present
/// (through any device) fails with [`io::ErrorKind::AlreadyExists`].
pub fn add_route(if_index: u32, prefix: &Prefix) -> io::Result<()> {
    let msg = route_message(libc::RTM_NEWROUTE, F_CREATE | F_EXCL, if_index, prefix);
    request(msg)
}

/// Delete the route to `prefix` through `if_index` that [`add_route`] added (protocol
/// `static`). A missing route fails with [`io::ErrorKind::NotFound`].
pub fn delete_route(if_index: u32, prefix: &Prefix) -> io::Result<()> {
    let msg = route_message(libc::RTM_DELROUTE, 0, if_index, prefix);
    request(msg).map_err(|e| {
        if e.raw_os_error() == Some(libc::ESRCH) {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no route to {prefix} to delete"),
            )
        } else {
            e
        }
    })
}

/// Assign `address` (with its prefix length, `10.77.0.1/24`) to the interface `if_index`.
/// The kernel adds the route to the prefix's network through the interface. IPv6 addresses
/// skip duplicate address detection, which is meaningless on a point-to-point TUN device.
/// An address already present fails with [`io::ErrorKind::AlreadyExists`].
pub fn add_address(if_index: u32, address: &Prefix) -> io::Result<()> {
    request(address_message(if_index, address))
}

/// Set the MTU of the interface `if_index` and bring it up or down, in one request; `None`
/// leaves that property as it is.
pub fn set_link(if_index: u32, mtu: Option<u32>, up: Option<bool>) -> io::Result<()> {
    request(link_message(if_index, mtu, up)?)
}

/// Remove `address` (with its prefix length) from the interface `if_index`. A missing
/// address fails with [`io::ErrorKind::NotFound`] (the kernel's `EADDRNOTAVAIL`).
pub fn delete_address(if_index: u32, address: &Prefix) -> io::Result<()> {
    let mut msg = address_message(if_index, address);
    msg.set_kind(libc::RTM_DELADDR, F_REQUEST | F_ACK);
    request(msg).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no address {address} to delete"),
            )
        } else {
            e
        }
    })
}

/// What a route in a [`RouteSpec`] does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Out through the interface of this index (no gateway).
    Device(u32),
    /// Dropped silently (`blackhole`).
    Blackhole,
    /// Refused: the sender gets "network unreachable" (`unreachable`).
    Unreachable,
    /// Not in this table: the lookup goes on with the next rule (`throw`).
    Throw,
}

/// A route in any table, as policy routing needs them (`ip route add [TYPE] PREFIX [dev
/// DEV] table T [metric M] proto static`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// The destination; host bits are ignored.
    pub prefix: Prefix,
    /// Where its packets go.
    pub kind: RouteKind,
    /// The routing table (254 is `main`).
    pub table: u32,
    /// The metric (`RTA_PRIORITY`); lower wins. `None`: the kernel's default.
    pub metric: Option<u32>,
    /// The source address for packets that have none yet (`src`, `RTA_PREFSRC`): a local
    /// address of the family. `None`: the kernel picks one of the device's.
    pub source: Option<IpAddr>,
}

/// Add `route`. One with the same prefix, table and metric already present fails with
/// [`io::ErrorKind::AlreadyExists`].
pub fn add_route_spec(route: &RouteSpec) -> io::Result<()> {
    request(route_spec_message(
        libc::RTM_NEWROUTE,
        F_CREATE | F_EXCL,
        route,
    ))
}

/// Delete `route` (the same prefix, table, metric and type). A missing one fails with
/// [`io::ErrorKind::NotFound`].
pub fn delete_route_spec(route: &RouteSpec) -> io::Result<()> {
    request(route_spec_message(libc::RTM_DELROUTE, 0, route)).map_err(|e| {
        if e.raw_os_error() == Some(libc::ESRCH) {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no route to {} in table {} to delete",
                    route.prefix, route.table
                ),
            )
        } else {
            e
        }
    })
}

/// A policy routing rule (`ip rule add [not] fwmark MARK/MASK lookup TABLE pref PRIO`),
/// for one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSpec {
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
    /// Its priority (`pref`): rules are tried from the lowest.
    pub priority: u32,
    /// Packets whose mark, under the mask, equals this (`(mark, mask)`); `None`: all.
    pub fwmark: Option<(u32, u32)>,
    /// Match the packets the selector does *not* match (`not`).
    pub invert: bool,
    /// The table to look up.
    pub table: u32,
}

/// Add `rule`. The kernel accepts a duplicate rule; callers that must not stack them
/// delete first.
pub fn add_rule(rule: &RuleSpec) -> io::Result<()> {
    request(rule_message(libc::RTM_NEWRULE, F_CREATE, rule))
}

/// Delete one rule equal to `rule`. A missing one fails with [`io::ErrorKind::NotFound`]
/// (the kernel's `ENOENT`).
pub fn delete_rule(rule: &RuleSpec) -> io::Result<()> {
    request(rule_message(libc::RTM_DELRULE, 0, rule))
}

/// Every address of every interface, IPv4 and IPv6: the interface's index and the address
/// with its prefix length (`192.0.2.2/24`, `::1/128`), in the kernel's order. For a
/// point-to-point address this is the local end (`IFA_LOCAL`, which the kernel sends
/// whenever the local address differs from `IFA_ADDRESS`, the peer's), for every other
/// address `IFA_ADDRESS`. Needs no privilege.
pub fn list_addresses() -> io::Result<Vec<(u32, Prefix)>> {
    for _ in 0..DUMP_ATTEMPTS {
        let dump = dump_addresses()?;
        if !dump.interrupted {
            return Ok(dump.addresses);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::Interrupted,
        "the address dump was interrupted by changes, again and again",
    ))
}

/// One `RTM_GETADDR` dump on a fresh socket.
fn dump_addresses() -> io::Result<AddressDump> {
    let socket = open()?;
    // One request per socket: any sequence number works.
    let seq = 1;
    send(&socket, &address_dump_message().finish(seq))?;
    let mut buf = vec![0u8; DUMP_BUFFER];
    let mut dump = AddressDump::default();
    while !dump.done {
        let n = recv(&socket, &mut buf)?;
        dump.read(buf.get(..n).unwrap_or_default(), seq)?;
    }
    Ok(dump)
}

/// `RTM_GETADDR` for every address: an `ifaddrmsg` of family `AF_UNSPEC` (every family)
/// and nothing else set, what `ip address show` sends.
fn address_dump_message() -> Message {
    let mut msg = Message::new(libc::RTM_GETADDR, F_REQUEST | F_DUMP);
    msg.push(&[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0]);
    msg
}

/// An address dump as its datagrams arrive.
#[derive(Debug, Default, PartialEq, Eq)]
struct AddressDump {
    /// The addresses so far.
    addresses: Vec<(u32, Prefix)>,
    /// `NLMSG_DONE` arrived.
    done: bool,
    /// A message carried `NLM_F_DUMP_INTR`: the list may be inconsistent.
    interrupted: bool,
}

impl AddressDump {
    /// Read one datagram of the dump of request `seq`. A datagram that is not a sequence of
    /// well-formed messages is `InvalidData`; an error from the kernel is its errno.
    fn read(&mut self, mut datagram: &[u8], seq: u32) -> io::Result<()> {
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed address dump");
        while !datagram.is_empty() && !self.done {
            let len = read_u32(datagram, 0).ok_or_else(malformed)? as usize;
            if len < NLMSG_HDRLEN || len > datagram.len() {
                return Err(malformed());
            }
            let message = datagram.get(..len).ok_or_else(malformed)?;
            let kind = read_u16(message, 4).ok_or_else(malformed)?;
            let flags = read_u16(message, 6).ok_or_else(malformed)?;
            let this_seq = read_u32(message, 8).ok_or_else(malformed)?;
            datagram = datagram.get(align4(len)..).unwrap_or_default();
            if this_seq != seq {
                continue;
            }
            self.interrupted |= flags & F_DUMP_INTR != 0;
            match kind {
                // Both carry an `int` error after the header: 0, or a negative errno.
                NLMSG_DONE | NLMSG_ERROR => {
                    let error = read_u32(message, NLMSG_HDRLEN).unwrap_or(0) as i32;
                    if error != 0 {
                        return Err(io::Error::from_raw_os_error(error.saturating_neg()));
                    }
                    self.done |= kind == NLMSG_DONE;
                }
                libc::RTM_NEWADDR => {
                    if let Some(address) = parse_address(message).ok_or_else(malformed)? {
                        self.addresses.push(address);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One `RTM_NEWADDR` message: the interface index and the address, `Ok(None)` for a
/// family other than IPv4 and IPv6 or a message without an address; `None` if malformed.
fn parse_address(message: &[u8]) -> Option<Option<(u32, Prefix)>> {
    let header = message.get(NLMSG_HDRLEN..NLMSG_HDRLEN + IFADDRMSG_LEN)?;
    let (&family, rest) = header.split_first()?;
    let (&prefix_len, _) = rest.split_first()?;
    let if_index = read_u32(header, 4)?;
    let width = match i32::from(family) {
        libc::AF_INET => 4,
        libc::AF_INET6 => 16,
        _ => return Some(None),
    };
    let (mut local, mut address) = (None, None);
    let mut attrs = message.get(NLMSG_HDRLEN + IFADDRMSG_LEN..)?;
    while !attrs.is_empty() {
        let len = usize::from(read_u16(attrs, 0)?);
        if len < 4 || len > attrs.len() {
            return None;
        }
        let kind = read_u16(attrs, 2)? & NLA_TYPE_MASK;
        let payload = attrs.get(4..len)?;
        match kind {
            libc::IFA_LOCAL => local = Some(payload),
            libc::IFA_ADDRESS => address = Some(payload),
            _ => {}
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    let Some(bytes) = local.or(address) else {
        return Some(None);
    };
    let ip = match width {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        _ => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
    };
    Some(Some((if_index, Prefix::new(ip, prefix_len)?)))
}

fn family(ip: IpAddr) -> u8 {
    // AF_INET (2) and AF_INET6 (10) fit in the one-byte family fields.
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `RTM_NEWROUTE` / `RTM_DELROUTE` for `prefix` through `if_index`.
fn route_message(kind: u16, extra_flags: u16, if_index: u32, prefix: &Prefix) -> Message {
    let dst = prefix.network();
    let scope = match (kind, dst) {
        // Delete: "nowhere" matches a route of any scope (what `ip route del` sends).
        (libc::RTM_DELROUTE, _) => libc::RT_SCOPE_NOWHERE,
        (_, IpAddr::V4(_)) => libc::RT_SCOPE_LINK,
        (_, IpAddr::V6(_)) => libc::RT_SCOPE_UNIVERSE,
    };
    let mut msg = Message::new(kind, F_REQUEST | F_ACK | extra_flags);
    let rtmsg: [u8; RTMSG_LEN] = [
        family(dst),
        prefix.len(),
        0, // src_len
        0, // tos
        libc::RT_TABLE_MAIN,
        libc::RTPROT_STATIC,
        scope,
        libc::RTN_UNICAST,
        0, // rtm_flags (four bytes)
        0,
        0,
        0,
    ];
    msg.push(&rtmsg);
    if prefix.len() > 0 {
        // A default route carries no destination, as `ip` sends it.
        msg.attr(libc::RTA_DST, &ip_bytes(&dst));
    }
    msg.attr(libc::RTA_OIF, &if_index.to_ne_bytes());
    msg
}

/// `RTM_NEWROUTE` / `RTM_DELROUTE` for a [`RouteSpec`]. A table above 255 goes in
/// `RTA_TABLE` with `RT_TABLE_UNSPEC` in the header, as iproute2 sends it.
fn route_spec_message(kind: u16, extra_flags: u16, route: &RouteSpec) -> Message {
    let dst = route.prefix.network();
    let (rtn, oif) = match route.kind {
        RouteKind::Device(index) => (libc::RTN_UNICAST, Some(index)),
        RouteKind::Blackhole => (libc::RTN_BLACKHOLE, None),
        RouteKind::Unreachable => (libc::RTN_UNREACHABLE, None),
        RouteKind::Throw => (libc::RTN_THROW, None),
    };
    let scope = match (kind, rtn, dst) {
        (libc::RTM_DELROUTE, _, _) => libc::RT_SCOPE_NOWHERE,
        (_, libc::RTN_UNICAST, IpAddr::V4(_)) => libc::RT_SCOPE_LINK,
        _ => libc::RT_SCOPE_UNIVERSE,
    };
    let header_table = u8::try_from(route.table).unwrap_or(libc::RT_TABLE_UNSPEC);
    let mut msg = Message::new(kind, F_REQUEST | F_ACK | extra_flags);
    let rtmsg: [u8; RTMSG_LEN] = [
        family(dst),
        route.prefix.len(),
        0,
        0,
        header_table,
        libc::RTPROT_STATIC,
        scope,
        rtn,
        0,
        0,
        0,
        0,
    ];
    msg.push(&rtmsg);
    if route.prefix.len() > 0 {
        msg.attr(libc::RTA_DST, &ip_bytes(&dst));
    }
    if let Some(index) = oif {
        msg.attr(libc::RTA_OIF, &index.to_ne_bytes());
    }
    if let Some(metric) = route.metric {
        msg.attr(libc::RTA_PRIORITY, &metric.to_ne_bytes());
    }
    if let Some(source) = route.source {
        msg.attr(libc::RTA_PREFSRC, &ip_bytes(&source));
    }
    msg.attr(libc::RTA_TABLE, &route.table.to_ne_bytes());
    msg
}

/// `struct fib_rule_hdr` (`linux/fib_rules.h`): family, dst_len, src_len, tos, table,
/// res1, res2, action (one byte each), then `u32 flags`. libc does not define it.
const FIB_RULE_HDR_LEN: usize = 12;
/// `FRA_*` attributes and values of `linux/fib_rules.h` (libc has only the message types).
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
/// `FR_ACT_TO_TBL`: look the packet up in the rule's table.
const FR_ACT_TO_TBL: u8 = 1;
/// `FIB_RULE_INVERT`: the rule matches what its selectors do not.
const FIB_RULE_INVERT: u32 = 2;

/// `RTM_NEWRULE` / `RTM_DELRULE` for a [`RuleSpec`].
fn rule_message(kind: u16, extra_flags: u16, rule: &RuleSpec) -> Message {
    let family = if rule.ipv6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    };
    let header_table = u8::try_from(rule.table).unwrap_or(libc::RT_TABLE_UNSPEC);
    let flags = if rule.invert { FIB_RULE_INVERT } else { 0 };
    let [f0, f1, f2, f3] = flags.to_ne_bytes();
    let mut msg = Message::new(kind, F_REQUEST | F_ACK | extra_flags);
    let hdr: [u8; FIB_RULE_HDR_LEN] = [
        family,
        0, // dst_len
        0, // src_len
        0, // tos
        header_table,
        0,
        0,
        FR_ACT_TO_TBL,
        f0,
        f1,
        f2,
        f3,
    ];
    msg.push(&hdr);
    msg.attr(FRA_PRIORITY, &rule.priority.to_ne_bytes());
    if let Some((mark, mask)) = rule.fwmark {
        msg.attr(FRA_FWMARK, &mark.to_ne_bytes());
        msg.attr(FRA_FWMASK, &mask.to_ne_bytes());
    }
    msg.attr(FRA_TABLE, &rule.table.to_ne_bytes());
    msg
}

/// `RTM_NEWADDR` adding `address` to `if_index`.
fn address_message(if_index: u32, address: &Prefix) -> Message {
    let ip = address.addr();
    // IFA_F_NODAD is 0x02, within the legacy one-byte flags field.
    let flags = if ip.is_ipv6() {
        libc::IFA_F_NODAD as u8
    } else {
        0
    };
    let mut msg = Message::new(libc::RTM_NEWADDR, F_REQUEST | F_ACK | F_CREATE | F_EXCL);
    let [i0, i1, i2, i3] = if_index.to_ne_bytes();
    let ifaddrmsg: [u8; IFADDRMSG_LEN] = [
        family(ip),
        address.len(),
        flags,
        libc::RT_SCOPE_UNIVERSE,
        i0,
        i1,
        i2,
        i3,
    ];
    msg.push(&ifaddrmsg);
    // IFA_LOCAL is the interface's address; IFA_ADDRESS the same one, since there is no
    // peer address (what `ip address add` sends).
    msg.attr(libc::IFA_LOCAL, &ip_bytes(&ip));
    msg.attr(libc::IFA_ADDRESS, &ip_bytes(&ip));
    msg
}

/// `RTM_NEWLINK` changing the MTU and the `IFF_UP` flag of an existing interface.
fn link_message(if_index: u32, mtu: Option<u32>, up: Option<bool>) -> io::Result<Message> {
    let index = i32::try_from(if_index)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    let iff_up = libc::IFF_UP as u32;
    let (flags, change) = match up {
        None => (0, 0),
        Some(true) => (iff_up, iff_up),
        Some(false) => (0, iff_up),
    };
    let mut msg = Message::new(libc::RTM_NEWLINK, F_REQUEST | F_ACK);
    let [i0, i1, i2, i3] = index.to_ne_bytes();
    let [f0, f1, f2, f3] = flags.to_ne_bytes();
    let [c0, c1, c2, c3] = change.to_ne_bytes();
    let ifinfomsg: [u8; IFINFOMSG_LEN] = [
        libc::AF_UNSPEC as u8,
        0, // pad
        0, // type (two bytes)
        0,
        i0,
        i1,
        i2,
        i3,
        f0,
        f1,
        f2,
        f3,
        c0,
        c1,
        c2,
        c3,
    ];
    msg.push(&ifinfomsg);
    if let Some(mtu) = mtu {
        msg.attr(libc::IFLA_MTU, &mtu.to_ne_bytes());
    }
    Ok(msg)
}

/// A netlink request being built: header, family header, attributes, each 4-byte aligned.
struct Message {
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Message {
    /// A header with the length and sequence number left to [`Message::finish`].
    fn new(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        Self { buf }
    }

    /// Change the message's type and flags (a delete built from an add's fields).
    fn set_kind(&mut self, kind: u16, flags: u16) {
        if let Some(field) = self.buf.get_mut(4..8) {
            let [k0, k1] = kind.to_ne_bytes();
            let [g0, g1] = flags.to_ne_bytes();
            field.copy_from_slice(&[k0, k1, g0, g1]);
        }
    }

    /// The family header (`rtmsg`, `ifinfomsg`, `ifaddrmsg`), whose size is a multiple of 4.
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// An attribute (`struct rtattr`: length including itself, type, payload, padding).
    fn attr(&mut self, kind: u16, payload: &[u8]) {
        self.buf.resize(align4(self.buf.len()), 0);
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// The bytes to send, with length and sequence number in place.
    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        for (at, value) in [(0, len), (8, seq)] {
            if let Some(field) = self.buf.get_mut(at..at + 4) {
                field.copy_from_slice(&value.to_ne_bytes());
            }
        }
        self.buf
    }
}

/// Send one request on a fresh socket and wait for its acknowledgement.
fn request(msg: Message) -> io::Result<()> {
    let socket = open()?;
    // One request per socket: any sequence number works; a fixed one keeps tests exact.
    let seq = 1;
    send(&socket, &msg.finish(seq))?;
    let mut buf = [0u8; 8192];
    loop {
        let n = recv(&socket, &mut buf)?;
        let reply = buf.get(..n).unwrap_or_default();
        if let Some(result) = parse_ack(reply, seq)? {
            return result;
        }
    }
}

/// Send one message to the kernel.
fn send(socket: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; the socket
    // is connected to the kernel, so no address is needed.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast::<libc::c_void>(),
            bytes.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receive one datagram into `buf`; its length. A datagram longer than `buf` is
/// `InvalidData` (netlink would cut it and drop the rest).
fn recv(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, a writable buffer; the kernel writes
    // at most `buf.len()` bytes. With MSG_TRUNC it returns the datagram's full length.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_TRUNC,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n > buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a netlink datagram of {n} bytes, longer than the buffer"),
        ));
    }
    Ok(n)
}

/// A `NETLINK_ROUTE` socket bound to a kernel-chosen port and connected to the kernel
/// (so it accepts messages from the kernel only), with a receive timeout.
fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; its result is checked before use.
    let fd = super::check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain integers (family, padding, port id, groups), for which
    // all zeroes is valid: port 0 and no groups.
    let mut kernel: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `kernel`, a local sockaddr_nl; binding to
    // port 0 lets the kernel pick a free port id.
    super::check(unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const kernel).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    // SAFETY: as above; port 0 is the kernel.
    super::check(unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const kernel).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    let timeout = libc::timeval {
        tv_sec: ACK_TIMEOUT_SECS,
        tv_usec: 0,
    };
    super::setsockopt(socket.as_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, timeout)?;
    Ok(socket)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Look for the acknowledgement of request `seq` in one datagram from the kernel:
/// `Some(Ok)` for an ack, `Some(Err)` for a refusal, `None` if it is not in this datagram.
/// A datagram that is not a sequence of well-formed messages is `InvalidData`.
fn parse_ack(mut reply: &[u8], seq: u32) -> io::Result<Option<io::Result<()>>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
    while !reply.is_empty() {
        let len = read_u32(reply, 0).ok_or_else(malformed)? as usize;
        if len < NLMSG_HDRLEN || len > reply.len() {
            return Err(malformed());
        }
        let kind = read_u16(reply, 4).ok_or_else(malformed)?;
        let this_seq = read_u32(reply, 8).ok_or_else(malformed)?;
        if kind == NLMSG_ERROR && this_seq == seq {
            let error = read_u32(reply, NLMSG_HDRLEN).ok_or_else(malformed)? as i32;
            return Ok(Some(match error {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(e.saturating_neg())),
            }));
        }
        reply = reply.get(align4(len)..).unwrap_or_default();
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testns;
    use std::process::Command;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn add_route_v4_bytes() {
        // What `ip route add 10.98.0.0/16 dev <7> proto static` sends, host bits cleared.
        let bytes =
            route_message(libc::RTM_NEWROUTE, F_CREATE | F_EXCL, 7, &p("10.98.1.1/16")).finish(1);
        let mut want = Vec::new();
        want.extend(ne32(44));
        want.extend(ne16(24)); // RTM_NEWROUTE
        want.extend(ne16(0x1 | 0x4 | 0x400 | 0x200)); // REQUEST|ACK|CREATE|EXCL
        want.extend(ne32(1));
        want.extend(ne32(0));
        want.extend([2, 16, 0, 0, 254, 4, 253, 1]); // inet, /16, main, static, link, unicast
        want.extend(ne32(0));
        want.extend(ne16(8));
        want.extend(ne16(1)); // RTA_DST
        want.extend([10, 98, 0, 0]);
        want.extend(ne16(8));
        want.extend(ne16(4)); // RTA_OIF
        want.extend(ne32(7));
        assert_eq!(bytes, want);
    }

    #[test]
    fn delete_route_v6_bytes() {
        let bytes = route_message(libc::RTM_DELROUTE, 0, 3, &p("fd98::1/48")).finish(1);
        assert_eq!(bytes.len(), 16 + 12 + 20 + 8);
        assert_eq!(&bytes[..4], ne32(56));
        assert_eq!(&bytes[4..6], ne16(25)); // RTM_DELROUTE
        assert_eq!(&bytes[6..8], ne16(0x1 | 0x4));
        assert_eq!(&bytes[16..24], [10, 48, 0, 0, 254, 4, 255, 1]); // inet6, nowhere
        assert_eq!(&bytes[28..30], ne16(20));
        let mut dst = [0u8; 16];
        dst[..2].copy_from_slice(&[0xfd, 0x98]);
        assert_eq!(&bytes[32..48], dst);
        assert_eq!(&bytes[52..56], ne32(3));
    }

    #[test]
    fn default_route_has_no_destination() {
        let bytes = route_message(libc::RTM_NEWROUTE, 0, 3, &p("0.0.0.0/0")).finish(1);
        assert_eq!(bytes.len(), 16 + 12 + 8);
        assert_eq!(&bytes[30..32], ne16(libc::RTA_OIF));
    }

    #[test]
    fn address_and_link_bytes() {
        let bytes = address_message(9, &p("fd99::1/64")).finish(1);
        assert_eq!(bytes.len(), 16 + 8 + 20 + 20);
        assert_eq!(&bytes[6..8], ne16(0x1 | 0x4 | 0x400 | 0x200));
        assert_eq!(&bytes[16..20], [10, 64, 2, 0]); // inet6, /64, NODAD, universe
        assert_eq!(&bytes[20..24], ne32(9));
        assert_eq!(&bytes[26..28], ne16(libc::IFA_LOCAL));
        assert_eq!(&bytes[46..48], ne16(libc::IFA_ADDRESS));

        let bytes = link_message(9, Some(1400), Some(true)).unwrap().finish(1);
        assert_eq!(bytes.len(), 16 + 16 + 8);
        assert_eq!(&bytes[4..6], ne16(16)); // RTM_NEWLINK
        assert_eq!(&bytes[20..24], ne32(9));
        assert_eq!(&bytes[24..32], [ne32(1), ne32(1)].concat()); // flags, change: IFF_UP
        assert_eq!(&bytes[32..36], [ne16(8), ne16(libc::IFLA_MTU)].concat());
        assert_eq!(&bytes[36..40], ne32(1400));
        let down = link_message(9, None, Some(false)).unwrap().finish(1);
        assert_eq!(&down[24..32], [ne32(0), ne32(1)].concat());
        assert!(link_message(u32::MAX, None, None).is_err());
    }

    fn error_reply(seq: u32, error: i32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(ne32(36));
        r.extend(ne16(NLMSG_ERROR));
        r.extend(ne16(0x100)); // NLM_F_CAPPED
        r.extend(ne32(seq));
        r.extend(ne32(4242));
        r.extend(error.to_ne_bytes());
        r.extend([0u8; 16]); // the echoed request header
        r
    }

    #[test]
    fn acks_and_refusals() {
        assert!(matches!(parse_ack(&error_reply(1, 0), 1), Ok(Some(Ok(())))));
        let exists = parse_ack(&error_reply(1, -libc::EEXIST), 1)
            .unwrap()
            .unwrap();
        assert_eq!(exists.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        // Another request's ack is skipped; ours after it is found.
        let mut two = error_reply(9, -libc::EPERM);
        two.extend(error_reply(1, -libc::ENODEV));
        let err = parse_ack(&two, 1).unwrap().unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        assert!(parse_ack(&error_reply(9, 0), 1).unwrap().is_none());
        assert!(parse_ack(&[], 1).unwrap().is_none());
    }

    #[test]
    fn malformed_replies_are_errors() {
        let reply = error_reply(1, 0);
        for cut in [1, 15, 19, 35] {
            assert_eq!(
                parse_ack(&reply[..cut], 1).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "cut at {cut}"
            );
        }
        let mut short_len = reply.clone();
        short_len[..4].copy_from_slice(&ne32(8));
        assert!(parse_ack(&short_len, 1).is_err());
    }

    #[test]
    fn address_dump_bytes() {
        let bytes = address_dump_message().finish(1);
        let mut want = Vec::new();
        want.extend(ne32(24));
        want.extend(ne16(22)); // RTM_GETADDR
        want.extend(ne16(0x1 | 0x100 | 0x200)); // REQUEST|ROOT|MATCH
        want.extend(ne32(1));
        want.extend(ne32(0));
        want.extend([0u8; 8]); // AF_UNSPEC, the rest zero
        assert_eq!(bytes, want);
    }

    /// A netlink message: header (flags, seq) and body.
    fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(ne32(u32::try_from(16 + body.len()).unwrap()));
        m.extend(ne16(kind));
        m.extend(ne16(flags));
        m.extend(ne32(seq));
        m.extend(ne32(4242));
        m.extend(body);
        m.resize(align4(m.len()), 0);
        m
    }

    /// An `RTM_NEWADDR` body: ifaddrmsg and attributes.
    fn new_addr(family: u8, len: u8, index: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, len, 0x80, 0];
        body.extend(ne32(index));
        for (kind, payload) in attrs {
            body.extend(ne16(u16::try_from(4 + payload.len()).unwrap()));
            body.extend(ne16(*kind));
            body.extend(*payload);
            body.resize(align4(body.len()), 0);
        }
        body
    }

    const MULTI: u16 = libc::NLM_F_MULTI as u16;
    const INET: u8 = libc::AF_INET as u8;
    const INET6: u8 = libc::AF_INET6 as u8;

    #[test]
    fn address_dump_replies() {
        let fd00_2 = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let label = [(libc::IFA_LABEL, &b"eth0\0"[..])];
        // A point-to-point IPv4 address: local 10.9.0.1, peer 10.9.0.2.
        let ptp = new_addr(
            INET,
            32,
            5,
            &[
                (libc::IFA_ADDRESS, &[10, 9, 0, 2]),
                (libc::IFA_LOCAL, &[10, 9, 0, 1]),
            ],
        );
        let mut first = message(libc::RTM_NEWADDR, MULTI, 1, &ptp);
        first.extend(message(
            libc::RTM_NEWADDR,
            MULTI,
            1,
            &new_addr(INET, 24, 4, &[label[0], (libc::IFA_LOCAL, &[192, 0, 2, 2])]),
        ));
        // Another family, another request, a message without an address: skipped.
        first.extend(message(
            libc::RTM_NEWADDR,
            MULTI,
            1,
            &new_addr(45, 0, 4, &[]),
        ));
        first.extend(message(
            libc::RTM_NEWADDR,
            MULTI,
            7,
            &new_addr(INET, 8, 1, &[(libc::IFA_LOCAL, &[127, 0, 0, 1])]),
        ));
        first.extend(message(
            libc::RTM_NEWADDR,
            MULTI,
            1,
            &new_addr(INET, 8, 1, &label),
        ));
        let second = [
            message(
                libc::RTM_NEWADDR,
                MULTI,
                1,
                &new_addr(INET6, 64, 4, &[(libc::IFA_ADDRESS, &fd00_2)]),
            ),
            message(NLMSG_DONE, MULTI, 1, &ne32(0)),
        ]
        .concat();

        let mut dump = AddressDump::default();
        dump.read(&first, 1).unwrap();
        assert!(!dump.done);
        dump.read(&second, 1).unwrap();
        assert!(dump.done && !dump.interrupted);
        assert_eq!(
            dump.addresses,
            [
                (5, p("10.9.0.1/32")),
                (4, p("192.0.2.2/24")),
                (4, p("fd00::2/64"))
            ]
        );

        let mut dump = AddressDump::default();
        let interrupted = message(libc::RTM_NEWADDR, MULTI | F_DUMP_INTR, 1, &ptp);
        dump.read(&[interrupted, second.clone()].concat(), 1)
            .unwrap();
        assert!(dump.done && dump.interrupted);

        // The kernel refused the dump.
        let refused = message(NLMSG_DONE, MULTI, 1, &(-libc::EINVAL).to_ne_bytes());
        let err = AddressDump::default().read(&refused, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        let err = AddressDump::default()
            .read(&error_reply(1, -libc::EPERM), 1)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn malformed_address_dumps_are_errors() {
        let good = new_addr(INET, 24, 4, &[(libc::IFA_LOCAL, &[192, 0, 2, 2])]);
        let mut bad_attr_len = good.clone();
        bad_attr_len[8..10].copy_from_slice(&ne16(3));
        let mut long_attr = good.clone();
        long_attr[8..10].copy_from_slice(&ne16(64));
        let cases = [
            message(libc::RTM_NEWADDR, MULTI, 1, &good[..7]),
            message(libc::RTM_NEWADDR, MULTI, 1, &bad_attr_len),
            message(libc::RTM_NEWADDR, MULTI, 1, &long_attr),
            // An IPv4 address of 16 bytes, a prefix longer than the family allows.
            message(
                libc::RTM_NEWADDR,
                MULTI,
                1,
                &new_addr(INET, 24, 4, &[(libc::IFA_LOCAL, &[0; 16])]),
            ),
            message(
                libc::RTM_NEWADDR,
                MULTI,
                1,
                &new_addr(INET, 33, 4, &[(libc::IFA_LOCAL, &[192, 0, 2, 2])]),
            ),
        ];
        for (i, case) in cases.iter().enumerate() {
            let err = AddressDump::default().read(case, 1).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "case {i}");
        }
        let whole = message(libc::RTM_NEWADDR, MULTI, 1, &good);
        for cut in [1, 15, 16, whole.len() - 1] {
            let err = AddressDump::default().read(&whole[..cut], 1).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "cut at {cut}");
        }
    }

    #[test]
    fn lists_loopback_addresses() {
        // The host's (or the CI container's) loopback, index 1: no privilege needed.
        let addresses = list_addresses().unwrap();
        assert!(addresses.contains(&(1, p("127.0.0.1/8"))), "{addresses:?}");
        assert!(addresses.contains(&(1, p("::1/128"))), "{addresses:?}");
    }

    #[test]
    fn addresses_in_a_namespace() {
        testns::run("netlink::addresses_in_a_namespace", || {
            // A new namespace's loopback is down and has no address.
            assert_eq!(list_addresses().unwrap(), []);
            let lo = 1;
            set_link(lo, None, Some(true)).unwrap();
            add_address(lo, &p("10.96.0.1/24")).unwrap();
            add_address(lo, &p("fd96::1/64")).unwrap();
            let addresses = list_addresses().unwrap();
            for want in ["127.0.0.1/8", "10.96.0.1/24", "::1/128", "fd96::1/64"] {
                assert!(addresses.contains(&(lo, p(want))), "{want}: {addresses:?}");
            }
            assert_eq!(addresses.len(), 4, "{addresses:?}");
        });
    }

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn rule_bytes() {
        // What `ip rule add not fwmark 0x736b0000/0xffff0000 lookup 29547 pref 5190` sends.
        let rule = RuleSpec {
            ipv6: false,
            priority: 5190,
            fwmark: Some((0x736b_0000, 0xffff_0000)),
            invert: true,
            table: 29547,
        };
        let bytes = rule_message(libc::RTM_NEWRULE, F_CREATE, &rule).finish(1);
        let mut want = Vec::new();
        want.extend(ne32(60));
        want.extend(ne16(32)); // RTM_NEWRULE
        want.extend(ne16(0x1 | 0x4 | 0x400)); // REQUEST|ACK|CREATE
        want.extend(ne32(1));
        want.extend(ne32(0));
        // inet, no lengths, no tos, table in the attribute, action to-table, flags invert
        want.extend([2, 0, 0, 0, 0, 0, 0, 1]);
        want.extend(ne32(2));
        for (kind, value) in [
            (6u16, 5190u32),
            (10, 0x736b_0000),
            (16, 0xffff_0000),
            (15, 29547),
        ] {
            want.extend(ne16(8));
            want.extend(ne16(kind));
            want.extend(ne32(value));
        }
        assert_eq!(bytes, want);
    }

    #[test]
    fn tables_rules_and_address_removal_in_a_namespace() {
        testns::run("netlink::tables_rules_and_address_removal", || {
            let lo = 1;
            set_link(lo, None, Some(true)).unwrap();
            add_address(lo, &p("10.96.0.1/24")).unwrap();
            let table = 29547;
            let routes = [
                RouteSpec {
                    prefix: p("0.0.0.0/0"),
                    kind: RouteKind::Device(lo),
                    table,
                    metric: None,
                    source: Some("10.96.0.1".parse().unwrap()),
                },
                RouteSpec {
                    prefix: p("0.0.0.0/0"),
                    kind: RouteKind::Blackhole,
                    table,
                    metric: Some(4_000_000_000),
                    source: None,
                },
                RouteSpec {
                    prefix: p("192.168.0.0/16"),
                    kind: RouteKind::Throw,
                    table,
                    metric: None,
                    source: None,
                },
                RouteSpec {
                    prefix: p("::/0"),
                    kind: RouteKind::Unreachable,
                    table,
                    metric: None,
                    source: None,
                },
            ];
            for route in &routes {
                add_route_spec(route).unwrap();
            }
            let shown = ip(&["route", "show", "table", "29547"]);
            assert!(
                shown.contains("default dev lo proto static scope link src 10.96.0.1"),
                "{shown}"
            );
            assert!(
                shown.contains("blackhole default proto static metric 4000000000"),
                "{shown}"
            );
            assert!(
                shown.contains("throw 192.168.0.0/16 proto static"),
                "{shown}"
            );
            let shown6 = ip(&["-6", "route", "show", "table", "29547"]);
            assert!(shown6.contains("unreachable default"), "{shown6}");
            assert_eq!(
                add_route_spec(&routes[2]).unwrap_err().kind(),
                io::ErrorKind::AlreadyExists
            );

            let rules = [false, true].map(|ipv6| RuleSpec {
                ipv6,
                priority: 5190,
                fwmark: Some((0x736b_0000, 0xffff_0000)),
                invert: true,
                table,
            });
            for rule in &rules {
                add_rule(rule).unwrap();
            }
            let shown = ip(&["rule", "show"]);
            assert!(
                shown.contains("5190:\tnot from all fwmark 0x736b0000/0xffff0000 lookup 29547"),
                "{shown}"
            );
            assert!(ip(&["-6", "rule", "show"]).contains("lookup 29547"));
            // A packet without the mark takes the table; one with it, main.
            let unmarked = ip(&["route", "get", "198.18.9.9"]);
            assert!(unmarked.contains("table 29547"), "{unmarked}");
            let marked = ip(&["route", "get", "10.96.0.2", "mark", "0x736b0000"]);
            assert!(!marked.contains("table 29547"), "{marked}");

            for rule in &rules {
                delete_rule(rule).unwrap();
            }
            assert!(!ip(&["rule", "show"]).contains("29547"));
            assert_eq!(
                delete_rule(&rules[0]).unwrap_err().raw_os_error(),
                Some(libc::ENOENT)
            );
            for route in &routes {
                delete_route_spec(route).unwrap();
            }
            assert_eq!(ip(&["route", "show", "table", "29547"]).trim(), "");
            assert_eq!(
                delete_route_spec(&routes[0]).unwrap_err().kind(),
                io::ErrorKind::NotFound
            );

            delete_address(lo, &p("10.96.0.1/24")).unwrap();
            assert!(!ip(&["address", "show", "dev", "lo"]).contains("10.96.0.1"));
            assert_eq!(
                delete_address(lo, &p("10.96.0.1/24")).unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
        });
    }

    #[test]
    fn routes_in_a_namespace() {
        testns::run("netlink::routes_in_a_namespace", || {
            // A dummy-free setup: loopback is the only interface of a new namespace.
            let lo = 1;
            set_link(lo, None, Some(true)).unwrap();
            add_address(lo, &p("10.96.0.1/24")).unwrap();
            let err = add_address(lo, &p("10.96.0.1/24")).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);

            add_route(lo, &p("10.95.0.0/16")).unwrap();
            add_route(lo, &p("fd95::/48")).unwrap();
            assert!(ip(&["route", "show"]).contains("10.95.0.0/16 dev lo proto static scope link"));
            assert!(ip(&["-6", "route", "show"]).contains("fd95::/48 dev lo proto static"));
            let again = add_route(lo, &p("10.95.0.0/16")).unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(again.raw_os_error(), Some(libc::EEXIST));

            delete_route(lo, &p("10.95.0.0/16")).unwrap();
            delete_route(lo, &p("fd95::/48")).unwrap();
            assert!(!ip(&["route", "show"]).contains("10.95.0.0"));
            assert!(!ip(&["-6", "route", "show"]).contains("fd95::"));
            let gone = delete_route(lo, &p("10.95.0.0/16")).unwrap_err();
            assert_eq!(gone.kind(), io::ErrorKind::NotFound);
            let gone = delete_route(lo, &p("fd95::/48")).unwrap_err();
            assert_eq!(gone.kind(), io::ErrorKind::NotFound);

            let no_device = add_route(999_999, &p("10.94.0.0/16")).unwrap_err();
            assert_eq!(no_device.raw_os_error(), Some(libc::ENODEV));
        });
    }
}
