//! What can be wrong with a config file, and how it is shown: `FILE:LINE:COL: KEY: MESSAGE`.
//!
//! Every variant names the file. Those about the content also carry the position (1-based
//! line and column, when the parser knows it) and the dotted key path (`apps.foo.daemon`;
//! list items as `default_args[2]`; keys that are not plain words quoted, `apps."a b"`).
//! An error about two values that clash names both: `FILE:LINE:COL: KEY: PROBLEM; the same
//! as OTHER_KEY at line N`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::MAX_CONFIG_LEN;
use crate::keyfile::KeyFileError;

/// A config file could not be loaded. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be opened or read: missing, not permitted, or a read failed.
    #[error("{}: cannot read the config file", .file.display())]
    Io {
        /// The config file path.
        file: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The path names something other than a regular file (a directory, a FIFO, a device).
    #[error("{}: not a regular file, so not a config file", .file.display())]
    NotRegularFile {
        /// The config file path.
        file: PathBuf,
    },
    /// The file is longer than [`MAX_CONFIG_LEN`]; it was refused before being parsed.
    #[error(
        "{}: {len} bytes is too large for a config file (at most {MAX_CONFIG_LEN})",
        .file.display()
    )]
    TooLarge {
        /// The config file path.
        file: PathBuf,
        /// The length in bytes, as far as it was measured.
        len: u64,
    },
    /// The file is not UTF-8 text.
    #[error("{}:{position}: not UTF-8 text", .file.display())]
    NotUtf8 {
        /// The config file path.
        file: PathBuf,
        /// Where the first byte that is not UTF-8 is.
        position: Position,
    },
    /// The text is not YAML, or its YAML does not fit the schema: an unknown key, a missing
    /// key, a value of the wrong type, a duplicate key.
    #[error("{}: {message}", Origin::new(.file, .position.as_ref(), .key.as_deref()))]
    Parse {
        /// The config file path.
        file: PathBuf,
        /// Where the parser stopped, when it knows.
        position: Option<Position>,
        /// The dotted key path of the offending value, when known.
        key: Option<String>,
        /// The parser's description of the problem (never a snippet of the file).
        message: String,
    },
    /// The YAML fits the schema, but a value is not allowed (an empty app name, an empty path).
    #[error("{}: {problem}", Origin::new(.file, .position.as_ref(), .key.as_deref()))]
    Invalid {
        /// The config file path.
        file: PathBuf,
        /// Where the value is, when known.
        position: Option<Position>,
        /// The dotted key path of the value, when known.
        key: Option<String>,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A value clashes with another one in the file (two routes with one name, one incoming
    /// route id used twice). The error is about the later of the two.
    #[error(
        "{}: {problem}; the same as {other_key}{}",
        Origin::new(.file, .position.as_ref(), .key.as_deref()),
        OnLine(.other_position.as_ref())
    )]
    Conflict {
        /// The config file path.
        file: PathBuf,
        /// Where the value is, when known.
        position: Option<Position>,
        /// The dotted key path of the value, when known.
        key: Option<String>,
        /// What is wrong with having both.
        problem: Problem,
        /// The dotted key path of the other value, the one that came first.
        other_key: String,
        /// Where the other value is, when known.
        other_position: Option<Position>,
    },
    /// A private key file the config names (`node.key`, `manager.key`) cannot be used:
    /// missing, unreadable, readable by others, or not a key.
    #[error(
        "{}: cannot use the private key file",
        Origin::new(.file, .position.as_ref(), .key.as_deref())
    )]
    Key {
        /// The config file path.
        file: PathBuf,
        /// Where the key file is named, when known.
        position: Option<Position>,
        /// The dotted key path naming the key file (`node.key`, `manager.key`).
        key: Option<String>,
        /// What is wrong with the key file; its message names the key file.
        #[source]
        source: KeyFileError,
    },
}

impl ConfigError {
    /// The config file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            Self::Io { file, .. }
            | Self::NotRegularFile { file }
            | Self::TooLarge { file, .. }
            | Self::NotUtf8 { file, .. }
            | Self::Parse { file, .. }
            | Self::Invalid { file, .. }
            | Self::Conflict { file, .. }
            | Self::Key { file, .. } => file,
        }
    }

    /// Where in the file the error is, when that is known.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::NotUtf8 { position, .. } => Some(*position),
            Self::Parse { position, .. }
            | Self::Invalid { position, .. }
            | Self::Conflict { position, .. }
            | Self::Key { position, .. } => *position,
            Self::Io { .. } | Self::NotRegularFile { .. } | Self::TooLarge { .. } => None,
        }
    }

    /// The dotted key path the error is about, when that is known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Parse { key, .. }
            | Self::Invalid { key, .. }
            | Self::Conflict { key, .. }
            | Self::Key { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// Whether this is a configuration mistake for the operator to fix (exit code 78).
    ///
    /// That is every case except an I/O failure other than "not found": a config file that
    /// was named explicitly and does not exist is a bad configuration too, while a permission
    /// problem or a failing disk is not (the caller maps those by their `io::Error`). The
    /// same goes for the key file the config names: missing, or there but unusable (mode,
    /// size, content), is a bad configuration; failing to read it otherwise is not.
    pub fn is_bad_config(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            Self::Key { source, .. } => {
                source.is_bad_key_file()
                    || matches!(
                        source,
                        KeyFileError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound
                    )
            }
            Self::NotRegularFile { .. }
            | Self::TooLarge { .. }
            | Self::NotUtf8 { .. }
            | Self::Parse { .. }
            | Self::Invalid { .. }
            | Self::Conflict { .. } => true,
        }
    }
}

/// A place in a config file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The line, from 1.
    pub line: u64,
    /// The column, from 1, in characters.
    pub column: u64,
}

impl Position {
    /// The position just after `prefix`, a text that starts at line 1, column 1.
    pub(super) fn after(prefix: &str) -> Self {
        let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
        let line = prefix.bytes().filter(|&b| b == b'\n').count() + 1;
        let column = prefix.get(line_start..).unwrap_or_default().chars().count() + 1;
        Self {
            line: u64::try_from(line).unwrap_or(u64::MAX),
            column: u64::try_from(column).unwrap_or(u64::MAX),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value that is well-formed YAML of the right type but not allowed.
///
/// The messages are fixed (the offending value is in the key path or the file, never
/// repeated here), and each is distinct: the YAML layer recognises them by their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// An app name is the empty string.
    #[error("app names must not be empty")]
    EmptyAppName,
    /// An app name contains whitespace or a control character, which the console's
    /// whitespace-separated commands (`start NAME ARGS...`) could not address.
    #[error("app names must not contain whitespace or control characters")]
    AppNameNotOneWord,
    /// A path is the empty string.
    #[error("paths must not be empty")]
    EmptyPath,
    /// A path contains a NUL byte, which no system call accepts.
    #[error("paths must not contain a NUL character")]
    NulInPath,
    /// A Unix socket path is longer than `sun_path` holds.
    #[error("a Unix socket path must be at most 107 bytes long (after resolving it)")]
    SocketPathTooLong,
    /// A transport address is not `IP:PORT`.
    #[error("expected IP:PORT, such as 198.18.0.2:6000 or [fd00::2]:6000")]
    NotASocketAddress,
    /// A hop's address is `0.0.0.0`, `::` or has port 0, which no packet can be sent to or
    /// come from.
    #[error("a hop's address needs a specific IP address and a port other than 0")]
    UnspecifiedHopAddress,
    /// A prefix has no `/LENGTH`.
    #[error("expected ADDRESS/LENGTH, such as 10.77.0.0/24 or fd77::/64")]
    PrefixWithoutLength,
    /// The address part of a prefix is not an IP address.
    #[error("the address of a prefix must be an IPv4 or IPv6 address")]
    PrefixBadAddress,
    /// The length part of a prefix is not a number up to the address's bits.
    #[error("a prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    PrefixBadLength,
    /// A route id is 0, which means "no route" on the wire.
    #[error("route id 0 means no route; route ids are 1 to 4294967295")]
    RouteIdZero,
    /// A route id is not a whole number that fits in 32 bits.
    #[error("route ids are whole numbers from 1 to 4294967295")]
    NotARouteId,
    /// A public key does not have 64 characters.
    #[error("a public key is 64 hex digits; this one has another length")]
    PublicKeyLength,
    /// A public key has a character that is not a hex digit.
    #[error("a public key is 64 hex digits; this one has a character that is not one")]
    PublicKeyNotHex,
    /// A duration is not a whole number with a unit.
    #[error("expected a duration such as 500ms, 25s, 1m or 1h (a plain number is seconds)")]
    NotADuration,
    /// A duration is zero or longer than a day.
    #[error("a duration must be longer than 0 and at most 24h")]
    DurationOutOfRange,
    /// An interface name is empty or longer than the kernel allows (15 bytes).
    #[error("an interface name must be 1 to 15 bytes long")]
    InterfaceNameLength,
    /// An interface name has a character outside `A-Z a-z 0-9 _ . -`, or is `.` or `..`.
    #[error(
        "an interface name may only contain A-Z, a-z, 0-9, '_', '.' and '-', and is not . or .."
    )]
    InterfaceNameCharacters,
    /// An MTU outside what an interface can carry.
    #[error("an MTU must be a whole number from 576 to 9000")]
    MtuOutOfRange,
    /// A route name is empty.
    #[error("route names must not be empty")]
    EmptyRouteName,
    /// A route name contains whitespace or a control character, which would break the
    /// line-based status output.
    #[error("route names must not contain whitespace or control characters")]
    RouteNameNotOneWord,
    /// The TUN device has no address.
    #[error("a TUN device needs at least one address")]
    TunWithoutAddresses,
    /// The TUN device has an IPv6 address and an MTU below IPv6's minimum.
    #[error("a TUN device with an IPv6 address needs an MTU of at least 1280")]
    MtuTooSmallForIpv6,
    /// A route has prefixes but there is no TUN device to deliver their packets to.
    #[error(
        "a route with prefixes ends in a TUN device, so it needs node.tun (a route without prefixes carries app streams only)"
    )]
    RoutesWithoutTun,
    /// Two routes have the same name.
    #[error("route names must be unique")]
    DuplicateRouteName,
    /// Two routes or relay rules have the same incoming route id.
    #[error("an incoming route id (in_id) must be unique among the routes and relays of a node")]
    DuplicateIncomingId,
    /// Two routes send the same prefix.
    #[error("two routes cannot send the same prefix")]
    DuplicatePrefix,
    /// A relay rule sends its packets back to the hop they came from: a routing loop.
    #[error(
        "a relay's next_hop must differ from its prev_hop: packets would go back and forth forever"
    )]
    RelayLoop,
    /// A route's peer is the node itself.
    #[error("a route's peer must be another node, not this node's own key (node.key)")]
    PeerIsSelf,
    /// The manager's address is `0.0.0.0`, `::` or has port 0, which cannot be dialled.
    #[error("the manager's address needs a specific IP address and a port other than 0")]
    UnspecifiedManagerAddress,
    /// A node with a manager but a `listen` address other nodes cannot send to, and no
    /// `endpoint` to say which one they can.
    #[error(
        "required when node.listen is 0.0.0.0, :: or port 0: \
         the IP:PORT other nodes send this node's transport packets to"
    )]
    ManagerEndpointRequired,
    /// `manager.rule_expiry` is outside its bounds.
    #[error("rule_expiry must be from 3s to 1h")]
    RuleExpiryOutOfRange,
    /// `manager.setup_timeout` is outside its bounds.
    #[error("setup_timeout must be from 100ms to 30s")]
    SetupTimeoutOutOfRange,
    /// `manager.heartbeat` is outside its bounds.
    #[error("heartbeat must be from 100ms to 60s")]
    HeartbeatOutOfRange,
    /// A hop count (`min_hops`, `max_hops`) is not a whole number from 1 to 16.
    #[error("a hop count is a whole number from 1 to 16")]
    HopCountOutOfRange,
    /// `manager.max_hops` is smaller than `manager.min_hops`.
    #[error("max_hops must be at least min_hops")]
    MaxHopsBelowMinHops,
    /// `manager.weight` is not one of the metrics.
    #[error("the route weight is hops or latency")]
    NotARouteWeight,
    /// `manager.allow` is written but lists no key, which would let no node register.
    #[error("an empty allow list lets no node register; leave allow out to let any node register")]
    EmptyAllowList,
    /// A node key appears twice in `manager.allow`.
    #[error("a node key is listed in allow only once")]
    DuplicateAllowedKey,
    /// A link is not a list of two keys.
    #[error("a link is a list of exactly two node keys")]
    LinkNotTwoKeys,
    /// A link names the same node twice.
    #[error("a link joins two different nodes")]
    LinkToItself,
    /// Two links join the same two nodes, in either order.
    #[error("a link between two nodes is listed once (in either order)")]
    DuplicateLink,
    /// A rule's peer is neither a public key nor `any`.
    #[error("a peer is a public key (64 hex digits) or any")]
    NotAPeer,
    /// A pinned address is not a host address.
    #[error("a pinned address is a host address (/32 or /128)")]
    PinnedAddressNotHost,
    /// A pinned address lies outside `manager.address_ranges`.
    #[error("a pinned address must lie inside address_ranges")]
    PinnedAddressOutsideRanges,
    /// An address is pinned twice.
    #[error("an address is pinned to one node, once")]
    DuplicatePinnedAddress,
    /// A count (`node.apps.streams`) is not a whole number from 1 to 1048576.
    #[error("a count is a whole number from 1 to 1048576")]
    CountOutOfRange,
    /// A size in bytes (`node.apps.buffer`) is not a whole number from 1 to 2^40.
    #[error("a size is a whole number of bytes from 1 to 1099511627776, without a unit")]
    ByteCountOutOfRange,
    /// A user or group is neither a numeric id nor a name.
    #[error(
        "a user or group is a numeric id or a name without whitespace, control characters, ':' or '/'"
    )]
    NotAnAccount,
    /// A user name that `/etc/passwd` does not have.
    #[error(
        "no user of that name in /etc/passwd; for a user only a directory service knows, write its uid"
    )]
    UnknownUser,
    /// A group name that `/etc/group` does not have.
    #[error(
        "no group of that name in /etc/group; for a group only a directory service knows, write its gid"
    )]
    UnknownGroup,
    /// `node.apps.buffer` is below the smallest buffer a stream gets.
    #[error("buffer must be at least 65536 bytes (the smallest buffer a stream gets)")]
    BufferTooSmall,
    /// `node.apps.memory` is less than two buffers.
    #[error("memory must be at least twice buffer (a stream has a buffer each way)")]
    MemoryBelowTwoBuffers,
    /// A port is not a whole number from 1 to 65535.
    #[error("a port is a whole number from 1 to 65535")]
    NotAPort,
    /// An exit's `allow` entry is not `PREFIX:PORT` or `PREFIX:*`.
    #[error(
        "expected PREFIX:PORT or PREFIX:* with the prefix's length, an IPv6 prefix in brackets \
         (198.18.0.0/15:8080, 203.0.113.7/32:*, [2001:db8::/32]:443)"
    )]
    NotAnException,
    /// A SOCKS username is empty, longer than 255 bytes or has a control character.
    #[error("a username is 1 to 255 bytes without control characters (RFC 1929)")]
    NotAUsername,
    /// Only one of `username` and `password_file` is written.
    #[error("`username` and `password_file` go together: write both, or neither")]
    UsernameWithoutPassword,
    /// A SOCKS listener on an address other than loopback without credentials.
    #[error(
        "a SOCKS server on an address other than loopback needs `username` and \
         `password_file`: without them anyone who reaches the address uses your exit"
    )]
    SocksListenNeedsAuth,
    /// A public exit with a list of clients.
    #[error("`public: true` serves every node; leave `clients` out, or set `public: false`")]
    PublicWithClients,
    /// A firewall mark is not `off`, `MARK` or `MARK/MASK` (whole numbers, hex with `0x`),
    /// or its mark is 0 or has bits outside its mask.
    #[error(
        "expected off, MARK or MARK/MASK, such as 0x736b0000/0xffff0000 (the mark not 0 and inside the mask)"
    )]
    NotAFwmark,
    /// The app socket is the control socket.
    #[error("the app socket must not be the control socket")]
    AppSocketIsControlSocket,
    /// The app socket is in the control socket's folder, which it would open to its group.
    #[error(
        "the app socket must not be in the control socket's folder, which is private to the node's user"
    )]
    AppSocketBesideControlSocket,
    /// The app socket's default path, derived from `node.control_socket`, is too long.
    #[error(
        "the app socket derived from this path (FOLDER-apps/NAME) would be longer than 107 bytes; set node.apps.socket"
    )]
    DerivedAppSocketTooLong,
    /// A value is not an IP address.
    #[error("expected an IP address, such as 198.18.9.53 or fd00:9::53")]
    NotAnIpAddress,
    /// `vpn.exit.pool.ipv4` is not an IPv4 prefix, or too long to lease from.
    #[error(
        "the IPv4 pool is an IPv4 prefix of length 30 at most (a /30 leases one address), \
         such as 10.213.0.0/16"
    )]
    BadIpv4Pool,
    /// `vpn.exit.pool.ipv6` is not `auto`, `none` or a short enough IPv6 prefix.
    #[error(
        "the IPv6 pool is auto, none, or an IPv6 prefix of length 126 at most, such as fd00:5b::/64"
    )]
    BadIpv6Pool,
    /// A `vpn.exit.allow_lan` prefix shares addresses with a pool.
    #[error("an allow_lan prefix must not overlap the pool: the pool's addresses are the clients'")]
    AllowLanOverlapsPool,
    /// `vpn.client.table` is 0 or a table the kernel reserves.
    #[error(
        "a routing table is a whole number from 1 to 4294967295 other than 253, 254 and 255 \
         (default, main and local)"
    )]
    NotARoutingTable,
    /// `vpn.client.priority` is outside the range between `local`'s rule and `main`'s.
    #[error(
        "a rule priority is a whole number from 1 to 32765 (0 is the local table's rule, \
         32766 main's)"
    )]
    NotARulePriority,
}

impl Problem {
    /// Every problem, for [`Problem::from_message`].
    const ALL: [Self; 69] = [
        Self::EmptyAppName,
        Self::AppNameNotOneWord,
        Self::EmptyPath,
        Self::NulInPath,
        Self::SocketPathTooLong,
        Self::NotASocketAddress,
        Self::UnspecifiedHopAddress,
        Self::PrefixWithoutLength,
        Self::PrefixBadAddress,
        Self::PrefixBadLength,
        Self::RouteIdZero,
        Self::NotARouteId,
        Self::PublicKeyLength,
        Self::PublicKeyNotHex,
        Self::NotADuration,
        Self::DurationOutOfRange,
        Self::InterfaceNameLength,
        Self::InterfaceNameCharacters,
        Self::MtuOutOfRange,
        Self::EmptyRouteName,
        Self::RouteNameNotOneWord,
        Self::TunWithoutAddresses,
        Self::MtuTooSmallForIpv6,
        Self::RoutesWithoutTun,
        Self::DuplicateRouteName,
        Self::DuplicateIncomingId,
        Self::DuplicatePrefix,
        Self::RelayLoop,
        Self::PeerIsSelf,
        Self::UnspecifiedManagerAddress,
        Self::ManagerEndpointRequired,
        Self::RuleExpiryOutOfRange,
        Self::SetupTimeoutOutOfRange,
        Self::HeartbeatOutOfRange,
        Self::HopCountOutOfRange,
        Self::MaxHopsBelowMinHops,
        Self::NotARouteWeight,
        Self::EmptyAllowList,
        Self::DuplicateAllowedKey,
        Self::LinkNotTwoKeys,
        Self::LinkToItself,
        Self::DuplicateLink,
        Self::NotAPeer,
        Self::PinnedAddressNotHost,
        Self::PinnedAddressOutsideRanges,
        Self::DuplicatePinnedAddress,
        Self::CountOutOfRange,
        Self::ByteCountOutOfRange,
        Self::NotAnAccount,
        Self::UnknownUser,
        Self::UnknownGroup,
        Self::BufferTooSmall,
        Self::MemoryBelowTwoBuffers,
        Self::AppSocketIsControlSocket,
        Self::AppSocketBesideControlSocket,
        Self::DerivedAppSocketTooLong,
        Self::NotAPort,
        Self::NotAnException,
        Self::NotAUsername,
        Self::UsernameWithoutPassword,
        Self::SocksListenNeedsAuth,
        Self::PublicWithClients,
        Self::NotAFwmark,
        Self::NotAnIpAddress,
        Self::BadIpv4Pool,
        Self::BadIpv6Pool,
        Self::AllowLanOverlapsPool,
        Self::NotARoutingTable,
        Self::NotARulePriority,
    ];

    /// The problem whose message is exactly `message`.
    ///
    /// Our checks run inside deserialization (so the parser attaches the position and the
    /// key path), and serde carries their errors as text; this turns that text back into the
    /// typed problem. No parser message can be mistaken for one: they are whole-string
    /// matches against fixed sentences of ours.
    pub(super) fn from_message(message: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.to_string() == message)
    }
}

/// ` at line N`, or nothing when the line is unknown.
struct OnLine<'a>(Option<&'a Position>);

impl fmt::Display for OnLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(position) => write!(f, " at line {}", position.line),
            None => Ok(()),
        }
    }
}

/// `FILE:LINE:COL: KEY`, leaving out what is unknown.
struct Origin<'a> {
    file: &'a Path,
    position: Option<&'a Position>,
    key: Option<&'a str>,
}

impl<'a> Origin<'a> {
    fn new(file: &'a Path, position: Option<&'a Position>, key: Option<&'a str>) -> Self {
        Self {
            file,
            position,
            key,
        }
    }
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(position) = self.position {
            write!(f, ":{position}")?;
        }
        if let Some(key) = self.key {
            write!(f, ": {key}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_column_key_message() {
        let err = ConfigError::Parse {
            file: "conf/x.yaml".into(),
            position: Some(Position { line: 3, column: 5 }),
            key: Some("apps.foo.daemon".into()),
            message: "invalid boolean".into(),
        };
        assert_eq!(
            err.to_string(),
            "conf/x.yaml:3:5: apps.foo.daemon: invalid boolean"
        );
        let err = ConfigError::Invalid {
            file: "x.yaml".into(),
            position: None,
            key: None,
            problem: Problem::EmptyPath,
        };
        assert_eq!(err.to_string(), "x.yaml: paths must not be empty");
        let err = ConfigError::Conflict {
            file: "c.yaml".into(),
            position: Some(Position { line: 9, column: 7 }),
            key: Some("node.routes[1].name".into()),
            problem: Problem::DuplicateRouteName,
            other_key: "node.routes[0].name".into(),
            other_position: Some(Position { line: 4, column: 7 }),
        };
        assert_eq!(
            err.to_string(),
            "c.yaml:9:7: node.routes[1].name: route names must be unique; \
             the same as node.routes[0].name at line 4"
        );
        assert!(err.is_bad_config());
        let err = ConfigError::Key {
            file: "m.yaml".into(),
            position: Some(Position { line: 2, column: 3 }),
            key: Some("manager.key".into()),
            source: KeyFileError::Permissions {
                path: "manager.key".into(),
                mode: 0o644,
            },
        };
        assert_eq!(
            err.to_string(),
            "m.yaml:2:3: manager.key: cannot use the private key file"
        );
    }

    #[test]
    fn problems_round_trip_through_their_messages() {
        for problem in Problem::ALL {
            assert_eq!(Problem::from_message(&problem.to_string()), Some(problem));
        }
        assert_eq!(Problem::from_message("app names must not be"), None);
        let messages: std::collections::HashSet<String> =
            Problem::ALL.iter().map(Problem::to_string).collect();
        assert_eq!(
            messages.len(),
            Problem::ALL.len(),
            "a message or a problem repeats"
        );
        assert_eq!(Problem::from_message(""), None);
    }

    #[test]
    fn position_after_counts_lines_and_characters() {
        assert_eq!(Position::after(""), Position { line: 1, column: 1 });
        assert_eq!(Position::after("ab"), Position { line: 1, column: 3 });
        assert_eq!(Position::after("a\n"), Position { line: 2, column: 1 });
        assert_eq!(Position::after("a\nxé"), Position { line: 2, column: 3 });
    }

    #[test]
    fn only_io_failures_other_than_not_found_are_not_bad_config() {
        let io = |kind| ConfigError::Io {
            file: "x".into(),
            source: io::Error::from(kind),
        };
        assert!(io(io::ErrorKind::NotFound).is_bad_config());
        assert!(!io(io::ErrorKind::PermissionDenied).is_bad_config());
        assert!(
            ConfigError::TooLarge {
                file: "x".into(),
                len: 1
            }
            .is_bad_config()
        );
        let key = |source| ConfigError::Key {
            file: "c.yaml".into(),
            position: None,
            key: Some("node.key".into()),
            source,
        };
        let read = |kind| KeyFileError::Read {
            path: "k".into(),
            source: io::Error::from(kind),
        };
        assert!(key(read(io::ErrorKind::NotFound)).is_bad_config());
        assert!(!key(read(io::ErrorKind::PermissionDenied)).is_bad_config());
        assert!(
            key(KeyFileError::Permissions {
                path: "k".into(),
                mode: 0o644
            })
            .is_bad_config()
        );
    }
}
