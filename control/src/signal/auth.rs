//! How the two ends of a signal connection prove they know the app's secret. Sans-IO:
//! frames in, frames and verdicts out; the caller brings the nonces.
//!
//! Viscript makes a fresh 32-byte [`Secret`] for every start of an app and gives it to
//! the app in its environment (`SIGNAL_CLIENT_SECRET`, 64 hex digits). A connection then
//! opens with three frames (`docs/SIGNAL.md` has them byte for byte):
//!
//! 1. server → client `Hello` (op 3, request id 0): `{"Nonce": NS}`, a fresh random nonce.
//! 2. client → server `Reg` (op 0): `{"Id": ID, "Pid": PID, "Nonce": NC, "Proof": PC}`.
//! 3. server → client the `Reg` reply: `{"Id": ID, "Proof": PS}`, or `{"Error": TEXT}` and
//!    the connection closes.
//!
//! ```text
//! PC = HMAC-SHA256(secret, "skywire signal v1 client proof" || ID u64 BE || NS || NC)
//! PS = HMAC-SHA256(secret, "skywire signal v1 server proof" || ID u64 BE || NS || NC)
//! ```
//!
//! Nonces and proofs are 32 bytes, written as 64 lower-case hex digits (either case is
//! read). The server checks `PC` before it answers and before it sends any request; the
//! client checks `PS` before it obeys any request. Each side's proof covers the other's
//! fresh nonce, so a recorded exchange proves nothing on a new connection; the two labels
//! differ, so neither proof can be reflected as the other; proofs are compared in
//! constant time ([`ring::hmac::verify`]).
//!
//! Why HMAC-SHA256 and not BLAKE3 as the manager protocol uses: a signal client may be
//! written in any language, and HMAC-SHA256 is in every standard library (Python's
//! `hmac`, Go's `crypto/hmac`), so `docs/signal_client.py` stays a small file with no
//! dependency. Why only the opening is authenticated and frames after it carry no MAC:
//! signal runs over loopback TCP, where no other local user can inject into or read a
//! connection (that needs root, who can read the secret from `/proc` anyway); the threat
//! is a process that connects to viscript, or listens where viscript listened, and the
//! opening shuts both out.

use std::fmt;

use ring::hmac;
use serde_json::{Value, json};
use zeroize::Zeroize;

use super::frame::{Frame, op};
use crate::terminal;

/// The label of the client's proof.
pub const CLIENT_LABEL: &[u8] = b"skywire signal v1 client proof";

/// The label of the server's proof.
pub const SERVER_LABEL: &[u8] = b"skywire signal v1 server proof";

/// The request id of `Hello` (it is not replied to).
pub const HELLO_REQUEST: u64 = 0;
/// The request id a client registers with.
pub const REG_REQUEST: u64 = 1;

/// 32 bytes as 64 lower-case hex digits.
fn to_hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

/// Exactly 64 hex digits (either case) as 32 bytes.
fn from_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let value = |d: u8| {
            char::from(d)
                .to_digit(16)
                .and_then(|v| u8::try_from(v).ok())
        };
        let [hi, lo] = pair else { return None };
        *byte = (value(*hi)? << 4) | value(*lo)?;
    }
    Some(out)
}

/// An app's signal secret: 32 random bytes, fresh for every start. Its `Debug` does not
/// show it, it is wiped on drop, and the only way to its bytes is [`Secret::to_hex`], for
/// the app's environment.
#[derive(Clone)]
pub struct Secret([u8; 32]);

/// Why a secret cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text is not 64 hex digits (the text is not repeated: it may be most of one).
    #[error("SIGNAL_CLIENT_SECRET is not 64 hex digits")]
    NotHex,
    /// The system's random number generator failed.
    #[error("no random secret: the system random number generator failed")]
    Rng,
}

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; 32];
        skywire_dataplane::crypto::keys::fill_random(&mut bytes).map_err(|_| SecretError::Rng)?;
        Ok(Self(bytes))
    }

    /// A secret from its 64 hex digits (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        from_hex(text.trim()).map(Self).ok_or(SecretError::NotHex)
    }

    /// The secret as 64 hex digits: for the app's environment, and nothing else.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// A secret with the given bytes (tests and fuzz targets use fixed ones).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The HMAC key.
    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl PartialEq for Secret {
    /// In constant time.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for Secret {}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A connection's fresh random nonce, one from each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub [u8; 32]);

impl Nonce {
    /// A fresh random nonce.
    pub fn random() -> Result<Self, SecretError> {
        let mut bytes = [0u8; 32];
        skywire_dataplane::crypto::keys::fill_random(&mut bytes).map_err(|_| SecretError::Rng)?;
        Ok(Self(bytes))
    }

    /// As 64 hex digits.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// From 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        from_hex(text).map(Self)
    }
}

/// A proof: HMAC-SHA256 over a label, the id and both nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof(pub [u8; 32]);

impl Proof {
    /// As 64 hex digits.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// From 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        from_hex(text).map(Self)
    }
}

/// What a proof covers: the label, the id (u64 big-endian), the server's nonce, the
/// client's nonce.
fn transcript(label: &[u8], id: u64, server: &Nonce, client: &Nonce) -> Vec<u8> {
    [label, &id.to_be_bytes(), &server.0, &client.0].concat()
}

/// The proof with `label` (either [`CLIENT_LABEL`] or [`SERVER_LABEL`]).
pub fn proof(secret: &Secret, label: &[u8], id: u64, server: &Nonce, client: &Nonce) -> Proof {
    let tag = hmac::sign(&secret.key(), &transcript(label, id, server, client));
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(tag.as_ref()) {
        *o = *b;
    }
    Proof(out)
}

/// Whether `given` is the proof with `label`, compared in constant time.
fn verify(
    secret: &Secret,
    label: &[u8],
    id: u64,
    server: &Nonce,
    client: &Nonce,
    given: &Proof,
) -> bool {
    hmac::verify(
        &secret.key(),
        &transcript(label, id, server, client),
        &given.0,
    )
    .is_ok()
}

/// A 32-byte field of a body, in hex; `Ok(None)` when absent.
fn field32(body: &Value, key: &str) -> Result<Option<[u8; 32]>, ()> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_str().and_then(from_hex).map(Some).ok_or(()),
    }
}

/// The server's first frame.
pub fn hello(nonce: &Nonce) -> Frame {
    Frame::request(op::HELLO, HELLO_REQUEST, json!({"Nonce": nonce.to_hex()}))
}

/// The server's nonce, if `frame` is a `Hello`.
pub fn hello_nonce(frame: &Frame) -> Option<Nonce> {
    if frame.is_reply() || frame.op != op::HELLO {
        return None;
    }
    field32(&frame.body, "Nonce").ok().flatten().map(Nonce)
}

/// Why the server refused a registration. The connection is then closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The client's first frame is not a `Reg` request.
    #[error("the first frame must be a registration (Reg, op 0)")]
    NotRegistration,
    /// The `Reg` has no unsigned integer `Id`.
    #[error("a registration needs an unsigned integer Id")]
    NoId,
    /// No app is running with this id, so there is no secret to check against.
    #[error("no app with id {0} is expected to register")]
    UnknownId(u64),
    /// The `Reg` has no `Nonce` and `Proof`: a client that predates authentication.
    #[error(
        "registration as id {0} carries no Nonce and Proof (a client from before authenticated signal; see docs/SIGNAL.md)"
    )]
    NoProof(u64),
    /// `Nonce` or `Proof` is not 64 hex digits.
    #[error("registration as id {0}: Nonce and Proof must be 64 hex digits")]
    Malformed(u64),
    /// The proof is not made with the app's secret.
    #[error("registration as id {0} has a wrong proof: not made with the secret of that app")]
    WrongProof(u64),
}

impl Refusal {
    /// The id the registration named, if it named one.
    pub fn id(&self) -> Option<u64> {
        match *self {
            Self::NotRegistration | Self::NoId => None,
            Self::UnknownId(id)
            | Self::NoProof(id)
            | Self::Malformed(id)
            | Self::WrongProof(id) => Some(id),
        }
    }
}

/// A registration the server accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The app's id.
    pub id: u64,
    /// The reply to send: the echo with the server's proof.
    pub echo: Frame,
}

/// Check a client's first frame on a connection whose `Hello` carried `server_nonce`.
/// `secret_of` gives the secret of an id the server expects, if any.
pub fn check_registration(
    server_nonce: &Nonce,
    frame: &Frame,
    secret_of: impl FnOnce(u64) -> Option<Secret>,
) -> Result<Accepted, Refusal> {
    if frame.is_reply() || frame.op != op::REG {
        return Err(Refusal::NotRegistration);
    }
    let id = frame
        .body
        .get("Id")
        .and_then(Value::as_u64)
        .ok_or(Refusal::NoId)?;
    let secret = secret_of(id).ok_or(Refusal::UnknownId(id))?;
    let nonce = field32(&frame.body, "Nonce").map_err(|()| Refusal::Malformed(id))?;
    let given = field32(&frame.body, "Proof").map_err(|()| Refusal::Malformed(id))?;
    let (client_nonce, given) = match (nonce, given) {
        (Some(nonce), Some(given)) => (Nonce(nonce), Proof(given)),
        (None, None) => return Err(Refusal::NoProof(id)),
        _ => return Err(Refusal::Malformed(id)),
    };
    if !verify(
        &secret,
        CLIENT_LABEL,
        id,
        server_nonce,
        &client_nonce,
        &given,
    ) {
        return Err(Refusal::WrongProof(id));
    }
    let server_proof = proof(&secret, SERVER_LABEL, id, server_nonce, &client_nonce);
    Ok(Accepted {
        id,
        echo: frame.reply(json!({"Id": id, "Proof": server_proof.to_hex()})),
    })
}

/// Why a client does not trust the server on this connection. The client closes it and
/// tries again later; it obeys nothing that came on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The server's first frame is not `Hello` with a nonce.
    #[error("the server did not open with Hello and a nonce (not an authenticated signal server)")]
    NoHello,
    /// Before proving itself, the server sent something other than the echo of the
    /// registration (a request, such as `Shutdown`, that the client will not obey).
    #[error("the server sent a request before proving it knows this app's secret")]
    Unexpected,
    /// The server refused the registration; its `Error` text (shown escaped).
    #[error("the server refused the registration: {}", terminal::safe(.0))]
    Refused(String),
    /// The echo's proof is missing or not made with the app's secret.
    #[error("the server did not prove it knows this app's secret")]
    WrongServerProof,
}

/// What the client does next during the opening.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this frame (the registration).
    Send(Frame),
    /// The server proved itself: serve its requests from now on.
    Authenticated,
}

/// The client's side of the opening.
#[derive(Debug)]
pub struct ClientAuth {
    id: u64,
    pid: u32,
    secret: Secret,
    nonce: Nonce,
    server_nonce: Option<Nonce>,
}

impl ClientAuth {
    /// Open as app `id` (process `pid`) with `secret` and a fresh `nonce`.
    pub fn new(id: u64, pid: u32, secret: Secret, nonce: Nonce) -> Self {
        Self {
            id,
            pid,
            secret,
            nonce,
            server_nonce: None,
        }
    }

    /// Handle a frame from the server until [`Step::Authenticated`]; an error means
    /// closing the connection.
    pub fn handle(&mut self, frame: &Frame) -> Result<Step, AuthError> {
        let Some(server_nonce) = self.server_nonce else {
            let server_nonce = hello_nonce(frame).ok_or(AuthError::NoHello)?;
            self.server_nonce = Some(server_nonce);
            let proof = proof(
                &self.secret,
                CLIENT_LABEL,
                self.id,
                &server_nonce,
                &self.nonce,
            );
            return Ok(Step::Send(Frame::request(
                op::REG,
                REG_REQUEST,
                json!({
                    "Id": self.id,
                    "Pid": self.pid,
                    "Nonce": self.nonce.to_hex(),
                    "Proof": proof.to_hex(),
                }),
            )));
        };
        if !frame.is_reply() || frame.base_op() != op::REG || frame.request != REG_REQUEST {
            return Err(AuthError::Unexpected);
        }
        if let Some(error) = frame.body.get("Error") {
            let text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(AuthError::Refused(text));
        }
        let given = field32(&frame.body, "Proof")
            .ok()
            .flatten()
            .ok_or(AuthError::WrongServerProof)?;
        if verify(
            &self.secret,
            SERVER_LABEL,
            self.id,
            &server_nonce,
            &self.nonce,
            &Proof(given),
        ) {
            Ok(Step::Authenticated)
        } else {
            Err(AuthError::WrongServerProof)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [0x11; 32];
    const NS: Nonce = Nonce([0x22; 32]);
    const NC: Nonce = Nonce([0x33; 32]);

    fn secret() -> Secret {
        Secret::from_bytes(SECRET)
    }

    /// Known answers, computed with Python's `hmac` (an implementation of its own):
    /// `hmac.new(b"\x11" * 32, label + struct.pack(">Q", 3) + b"\x22" * 32 + b"\x33" * 32,
    /// "sha256").hexdigest()`.
    #[test]
    fn proofs_match_known_answers() {
        assert_eq!(
            proof(&secret(), CLIENT_LABEL, 3, &NS, &NC).to_hex(),
            "eb942bfa869b645bb442a44c647c86463a2b0e3b553115097021b5e607b20ba8"
        );
        assert_eq!(
            proof(&secret(), SERVER_LABEL, 3, &NS, &NC).to_hex(),
            "1e86289d4a887b69307f298573c88ee609049e0956e40ad2a16ae439fab69460"
        );
    }

    #[test]
    fn hex_and_the_secret_stay_private() {
        let s = Secret::from_hex(&"Ab".repeat(32)).unwrap();
        assert_eq!(s.to_hex(), "ab".repeat(32));
        assert_eq!(s, Secret::from_bytes([0xab; 32]));
        assert_ne!(s, secret());
        assert_eq!(format!("{s:?}"), "Secret(..)");
        for bad in [
            "",
            "ab",
            &"ab".repeat(33),
            &"zz".repeat(32),
            &"é".repeat(32),
        ] {
            assert_eq!(Secret::from_hex(bad), Err(SecretError::NotHex), "{bad}");
        }
        assert_ne!(Secret::generate().unwrap(), Secret::generate().unwrap());
        assert_ne!(Nonce::random().unwrap(), Nonce::random().unwrap());
    }

    /// Client and server against each other in memory.
    fn open(
        client_secret: Secret,
        server_secret: Option<Secret>,
    ) -> (Frame, Result<Accepted, Refusal>) {
        let mut client = ClientAuth::new(3, 99, client_secret, NC);
        let Ok(Step::Send(reg)) = client.handle(&hello(&NS)) else {
            panic!("a registration")
        };
        let result = check_registration(&NS, &reg, |id| server_secret.filter(|_| id == 3));
        if let Ok(accepted) = &result {
            assert_eq!(client.handle(&accepted.echo), Ok(Step::Authenticated));
        }
        (reg, result)
    }

    #[test]
    fn the_opening_byte_for_byte() {
        let hello = hello(&NS);
        let mut expected = vec![0, 0, 0, 86, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(br#"{"Nonce":""#);
        expected.extend_from_slice("22".repeat(32).as_bytes());
        expected.extend_from_slice(br#""}"#);
        assert_eq!(hello.encode().unwrap(), expected);

        let (reg, accepted) = open(secret(), Some(secret()));
        assert_eq!(
            reg.body,
            json!({
                "Id": 3,
                "Pid": 99,
                "Nonce": "33".repeat(32),
                "Proof": "eb942bfa869b645bb442a44c647c86463a2b0e3b553115097021b5e607b20ba8",
            })
        );
        assert_eq!((reg.op, reg.request), (op::REG, REG_REQUEST));
        let accepted = accepted.unwrap();
        assert_eq!(accepted.id, 3);
        assert_eq!(
            accepted.echo,
            Frame {
                op: 0x80,
                request: 1,
                body: json!({
                    "Id": 3,
                    "Proof": "1e86289d4a887b69307f298573c88ee609049e0956e40ad2a16ae439fab69460",
                }),
            }
        );
    }

    #[test]
    fn the_server_refuses_what_was_not_made_with_the_secret() {
        let (_, result) = open(Secret::from_bytes([0x12; 32]), Some(secret()));
        assert_eq!(result, Err(Refusal::WrongProof(3)));
        let (_, result) = open(secret(), None);
        assert_eq!(result, Err(Refusal::UnknownId(3)));

        let check = |frame: Frame| check_registration(&NS, &frame, |_| Some(secret()));
        // The original protocol's registration.
        assert_eq!(
            check(Frame::request(op::REG, 1, json!({"Id": 3}))),
            Err(Refusal::NoProof(3))
        );
        assert_eq!(
            check(Frame::request(op::REG, 1, json!({"Id": "3"}))),
            Err(Refusal::NoId)
        );
        assert_eq!(
            check(Frame::request(op::PING, 1, json!({"Id": 3}))),
            Err(Refusal::NotRegistration)
        );
        let (mut reg, _) = open(secret(), Some(secret()));
        reg.body["Proof"] = json!("zz");
        assert_eq!(check(reg.clone()), Err(Refusal::Malformed(3)));
        reg.body.as_object_mut().unwrap().remove("Proof");
        assert_eq!(check(reg), Err(Refusal::Malformed(3)));

        // A registration recorded on one connection fails on the next (another nonce).
        let (reg, _) = open(secret(), Some(secret()));
        let next = Nonce([0x44; 32]);
        assert_eq!(
            check_registration(&next, &reg, |_| Some(secret())),
            Err(Refusal::WrongProof(3))
        );
        // The proof is bound to the id.
        let mut other = reg;
        other.body["Id"] = json!(4);
        assert_eq!(check(other), Err(Refusal::WrongProof(4)));
    }

    #[test]
    fn the_client_obeys_nothing_before_the_server_proved_itself() {
        let fresh = || ClientAuth::new(3, 99, secret(), NC);
        let shutdown = Frame::request(op::SHUTDOWN, 7, Value::Null);
        assert_eq!(fresh().handle(&shutdown), Err(AuthError::NoHello));
        assert_eq!(
            fresh().handle(&Frame::request(op::HELLO, 0, json!({"Nonce": "x"}))),
            Err(AuthError::NoHello)
        );
        let registered = |echo: &Frame| {
            let mut client = fresh();
            assert!(matches!(client.handle(&hello(&NS)), Ok(Step::Send(_))));
            client.handle(echo)
        };
        assert_eq!(registered(&shutdown), Err(AuthError::Unexpected));
        let reg = Frame::request(op::REG, REG_REQUEST, Value::Null);
        // The original server's echo, without a proof.
        assert_eq!(
            registered(&reg.reply(json!({"Id": 3}))),
            Err(AuthError::WrongServerProof)
        );
        assert_eq!(
            registered(&reg.reply(json!({"Id": 3, "Proof": "00".repeat(32)}))),
            Err(AuthError::WrongServerProof)
        );
        // The server's proof from another connection (another client nonce): a replay.
        let replayed = proof(&secret(), SERVER_LABEL, 3, &NS, &Nonce([0x55; 32]));
        assert_eq!(
            registered(&reg.reply(json!({"Id": 3, "Proof": replayed.to_hex()}))),
            Err(AuthError::WrongServerProof)
        );
        // The client's own proof reflected back.
        let reflected = proof(&secret(), CLIENT_LABEL, 3, &NS, &NC);
        assert_eq!(
            registered(&reg.reply(json!({"Id": 3, "Proof": reflected.to_hex()}))),
            Err(AuthError::WrongServerProof)
        );
        let refused = registered(&reg.reply(json!({"Error": "no\u{1b}[2J"})));
        assert_eq!(refused, Err(AuthError::Refused("no\u{1b}[2J".to_owned())));
        assert_eq!(
            refused.unwrap_err().to_string(),
            r"the server refused the registration: no\e[2J"
        );
    }
}
