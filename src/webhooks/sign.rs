//! Webhook signatures, in the style of Stripe's: the header
//! `ctp-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
//!
//! The timestamp is the time of the attempt and is covered by the MAC, so a receiver that
//! refuses timestamps older than a few minutes refuses replays of a captured request; the
//! event id in the body (the same on every attempt) lets it drop duplicates.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "ctp-signature";

/// How far a timestamp may be from the receiver's clock in [`verify`] (docs/webhooks.md).
pub const TOLERANCE_SECONDS: i64 = 300;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The hex HMAC-SHA256 of `"<timestamp>." + body` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// The value of the [`HEADER`] header for an attempt made at `timestamp`.
pub fn header_value(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, body))
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<int>,v1=<hex>[,…]`.
    #[error("malformed {HEADER} header")]
    Malformed,
    /// The timestamp is further than the tolerance from now (a replay, or a skewed clock).
    #[error("timestamp {0} is outside the tolerance")]
    Stale(i64),
    /// No `v1` signature matches the body.
    #[error("no signature matches")]
    Mismatch,
}

/// Checks a [`HEADER`] value against `body` as a receiver would: the timestamp within
/// `tolerance` seconds of `now`, and some `v1` equal (in constant time) to the MAC.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", v)) => {
                candidates.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > tolerance {
        return Err(SignatureError::Stale(t));
    }
    candidates
        .iter()
        .any(|c| mac(secret, t, body).verify_slice(c).is_ok())
        .then_some(())
        .ok_or(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_0123456789";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test_0123456789",
        //   b"1700000000.{\"id\":\"evt_1\"}", hashlib.sha256).hexdigest())'
        assert_eq!(
            header_value(SECRET, 1_700_000_000, BODY),
            "t=1700000000,v1=96a6e4147d41eb58c1480c33f2e6c77496783ed0b5e00ff73e862fbca407ecc6"
        );
    }

    #[test]
    fn verify_refuses_other_bodies_secrets_old_timestamps_and_garbage() {
        let t = 1_700_000_000;
        let h = header_value(SECRET, t, BODY);
        assert_eq!(verify(SECRET, &h, BODY, t + 10, 300), Ok(()));
        // Another scheme's entry and a second (rotated) signature are allowed.
        let rotated = format!(
            "t={t},v0=zz,v1={},v1={}",
            "00".repeat(32),
            &h[h.len() - 64..]
        );
        assert_eq!(verify(SECRET, &rotated, BODY, t, 300), Ok(()));
        assert_eq!(
            verify(SECRET, &h, br#"{"id":"evt_2"}"#, t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another secret!!", &h, BODY, t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &h, BODY, t + 301, 300),
            Err(SignatureError::Stale(t))
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = h.replace("t=1700000000", "t=1700000100");
        assert_eq!(
            verify(SECRET, &moved, BODY, t + 100, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(
                verify(SECRET, bad, BODY, 1, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
