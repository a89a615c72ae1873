#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use skywire_dataplane::crypto::PrivateKey;

use super::*;
use crate::local::socket::tests::TempDir;
use crate::manager::proto::Bytes32;

/// A route `key` owns: its id derived from `key` and a nonce of `seed`.
fn route(key: &PublicKey, seed: u8, dst: u8) -> RouteRequest {
    let nonce = Bytes32([seed; 32]);
    RouteRequest {
        id: MeshRouteId::derive(key, &nonce),
        nonce: Some(nonce),
        dst: Key(PrivateKey::from_bytes([dst; 32]).public_key()),
        min_hops: Some(2),
        max_hops: None,
        avoid: Vec::new(),
        weight: None,
    }
}

fn owned(key: &PublicKey) -> Owned {
    Owned {
        routes: vec![route(key, 1, 7), route(key, 2, 8)],
        links: vec![Key(PrivateKey::from_bytes([9; 32]).public_key())],
        peers: vec![PeerRecord {
            key: Key(PrivateKey::from_bytes([7; 32]).public_key()),
            timestamp: 1_765_000_000_000_000_000,
            mac1: [5; 16],
        }],
    }
}

fn aside(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect()
}

#[test]
fn what_a_node_owns_comes_back_after_a_restart() {
    let scratch = TempDir::new();
    let dir = scratch.0.join("state");
    let key = PrivateKey::from_bytes([1; 32]).public_key();
    let (mut file, first) = StateFile::load(&dir, key);
    assert_eq!(first, Owned::default());
    // Nothing to write yet: no folder is made.
    file.save(&Owned::default(), Instant::now());
    assert!(!dir.exists());
    file.save(&owned(&key), Instant::now());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(file.file()), 0o600);
    assert_eq!(
        file.file().file_name().unwrap().to_str().unwrap(),
        format!("node-{}.json", &key.to_string()[..16])
    );
    // The next process reads it back.
    let (_, again) = StateFile::load(&dir, key);
    assert_eq!(again, owned(&key));
    // Another key in the same folder has a file of its own.
    let other = PrivateKey::from_bytes([2; 32]).public_key();
    assert_eq!(StateFile::load(&dir, other).1, Owned::default());
}

#[test]
fn a_damaged_or_foreign_file_is_set_aside_and_the_node_starts_without_it() {
    let scratch = TempDir::new();
    let key = PrivateKey::from_bytes([1; 32]).public_key();
    let path = StateFile::path(&scratch.0, &key);
    for (i, bad) in [
        "{\"version\": 1, \"key\": \"",
        "not json at all",
        "",
        "{\"version\": 2, \"key\": \"KEY\", \"routes\": [], \"links\": []}",
        "{\"version\": 1, \"key\": \"OTHER\", \"routes\": [], \"links\": []}",
        "{\"version\": 1, \"key\": \"KEY\", \"routes\": [], \"links\": [], \"extra\": 1}",
    ]
    .iter()
    .enumerate()
    {
        let text = bad
            .replace(
                "OTHER",
                &PrivateKey::from_bytes([2; 32]).public_key().to_string(),
            )
            .replace("KEY", &key.to_string());
        fs::write(&path, &text).unwrap();
        let (_, owned) = StateFile::load(&scratch.0, key);
        assert_eq!(owned, Owned::default(), "{text}");
        assert!(!path.exists(), "{text}");
        assert_eq!(aside(&scratch.0).len(), i + 1, "{text}");
    }
}

#[test]
fn routes_whose_id_this_key_cannot_derive_are_not_restored() {
    let scratch = TempDir::new();
    let key = PrivateKey::from_bytes([1; 32]).public_key();
    let other = PrivateKey::from_bytes([2; 32]).public_key();
    let (mut file, _) = StateFile::load(&scratch.0, key);
    let mut forged = owned(&key);
    // A route of another node's, and one without a nonce.
    forged.routes.push(route(&other, 3, 9));
    let mut bare = route(&key, 4, 9);
    bare.nonce = None;
    forged.routes.push(bare);
    file.save(&forged, Instant::now());
    let (_, restored) = StateFile::load(&scratch.0, key);
    assert_eq!(restored, owned(&key));
}

#[test]
fn a_folder_it_cannot_write_is_said_once_and_does_not_stop_the_node() {
    let scratch = TempDir::new();
    // A file where the folder should be.
    let blocked = scratch.0.join("file");
    fs::write(&blocked, "x").unwrap();
    let key = PrivateKey::from_bytes([1; 32]).public_key();
    let (mut file, owned_now) = StateFile::load(&blocked.join("state"), key);
    assert_eq!(owned_now, Owned::default());
    let t0 = Instant::now();
    file.save(&owned(&key), t0);
    assert!(file.failing);
    assert_eq!(file.retry_at, Some(t0 + SAVE_RETRY));
    // Not tried again before its time.
    file.save(&owned(&key), t0 + Duration::from_secs(1));
    assert_eq!(file.retry_at, Some(t0 + SAVE_RETRY));
    // The folder made writable: the next try writes it.
    fs::remove_file(&blocked).unwrap();
    file.save(&owned(&key), t0 + SAVE_RETRY);
    assert!(!file.failing);
    assert_eq!(StateFile::load(&blocked.join("state"), key).1, owned(&key));
}
