//! `CalendlySignature`: checking the `Calendly-Webhook-Signature` header,
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<raw body>")>`.
//!
//! A pure function of (keys, header, raw bytes, now, tolerance): it knows
//! nothing of HTTP or the database, so it is tested with fixed vectors. The
//! MAC is computed over the bytes exactly as received, never a re-serialized
//! body, and compared in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature was refused. The `code` is what the event log
/// and the 401 answer carry; none of them reveals a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No `Calendly-Webhook-Signature` header.
    Missing,
    /// The header is not `t=<digits>,v1=<64 hex digits>`.
    Malformed(&'static str),
    /// `t` is older than the tolerance.
    Stale,
    /// `t` is further in the future than the tolerance.
    Future,
    /// Well formed and timely, but no signing key produces this MAC.
    Mismatch,
    /// No signing key is configured, so nothing can be verified.
    NoKeys,
}

impl Reason {
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed(_) => "malformed",
            Reason::Stale => "stale",
            Reason::Future => "future",
            Reason::Mismatch => "mismatch",
            Reason::NoKeys => "no_keys",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Missing => write!(f, "the Calendly-Webhook-Signature header is missing"),
            Reason::Malformed(why) => write!(f, "the Calendly-Webhook-Signature header is malformed: {why}"),
            Reason::Stale => write!(f, "the signature's timestamp is older than the allowed tolerance"),
            Reason::Future => write!(f, "the signature's timestamp is further in the future than the allowed tolerance"),
            Reason::Mismatch => write!(f, "the signature does not match the body with any signing key"),
            Reason::NoKeys => write!(f, "no Calendly signing key is configured (calendly.signing_keys or `syncgate calendly subscribe`)"),
        }
    }
}

/// A parsed header: the signed timestamp and every `v1` MAC it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendlySignature {
    pub t: i64,
    pub v1: Vec<[u8; 32]>,
}

impl CalendlySignature {
    /// Parse `t=…,v1=…`. Unknown parts (a future `v2`) are skipped; several
    /// `v1` parts are all tried, as senders do while rotating keys.
    pub fn parse(header: &str) -> Result<CalendlySignature, Reason> {
        if header.len() > 4096 {
            return Err(Reason::Malformed("it is too long"));
        }
        let mut t: Option<i64> = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').ok_or(Reason::Malformed("every part must be key=value"))?;
            match k.trim() {
                "t" => {
                    let v = v.trim();
                    if t.is_some() {
                        return Err(Reason::Malformed("t appears twice"));
                    }
                    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(Reason::Malformed("t must be a unix time in seconds"));
                    }
                    t = Some(v.parse().map_err(|_| Reason::Malformed("t must be a unix time in seconds"))?);
                }
                "v1" => {
                    let mut mac = [0u8; 32];
                    hex::decode_to_slice(v.trim(), &mut mac).map_err(|_| Reason::Malformed("v1 must be 64 hex digits"))?;
                    v1.push(mac);
                }
                _ => {}
            }
        }
        let t = t.ok_or(Reason::Malformed("t is missing"))?;
        if v1.is_empty() {
            return Err(Reason::Malformed("v1 is missing"));
        }
        Ok(CalendlySignature { t, v1 })
    }
}

/// `HMAC-SHA256(key, "<t>.<body>")`. HMAC takes keys of any length; should
/// the library ever refuse one, that key simply matches nothing.
pub fn mac(key: &[u8], t: i64, body: &[u8]) -> Option<[u8; 32]> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    let out = m.finalize().into_bytes();
    let mut mac = [0u8; 32];
    mac.copy_from_slice(out.as_slice());
    Some(mac)
}

/// The header Calendly would send for `body` signed with `key` at `t`
/// (used by tests, the benchmark and anyone replaying a delivery).
pub fn sign(key: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(key.as_bytes(), t, body).unwrap_or_default()))
}

/// Verify a delivery. `keys` are every signing key currently accepted (the
/// configured list plus stored ones; several during a rotation). Returns the
/// index of the key that matched.
pub fn verify<K: AsRef<str>>(keys: &[K], header: Option<&str>, body: &[u8], now: i64, tolerance_secs: u64) -> Result<usize, Reason> {
    let header = header.ok_or(Reason::Missing)?;
    let sig = CalendlySignature::parse(header)?;
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if sig.t < now.saturating_sub(tolerance) {
        return Err(Reason::Stale);
    }
    if sig.t > now.saturating_add(tolerance) {
        return Err(Reason::Future);
    }
    if keys.is_empty() {
        return Err(Reason::NoKeys);
    }
    let mut matched: Option<usize> = None;
    for (i, key) in keys.iter().enumerate() {
        let Some(expected) = mac(key.as_ref().as_bytes(), sig.t, body) else { continue };
        for given in &sig.v1 {
            // Constant time in the MAC bytes; which key matched is not secret.
            if bool::from(expected.ct_eq(given)) && matched.is_none() {
                matched = Some(i);
            }
        }
    }
    matched.ok_or(Reason::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_test_calendly_signing_key";
    const BODY: &[u8] = br#"{"event":"invitee.created","payload":{}}"#;
    const T: i64 = 1_492_774_577;
    // Computed independently: python3 -c 'import hmac,hashlib;print(hmac.new(b"sk_test_calendly_signing_key",
    //   b"1492774577." + b"{\"event\":\"invitee.created\",\"payload\":{}}", hashlib.sha256).hexdigest())'
    const V1: &str = "86000ec58ad8c941e6d445862616be999135b97863c41b471cea3377fe2636f0";

    #[test]
    fn known_vector() {
        assert_eq!(sign(KEY, T, BODY), format!("t={T},v1={V1}"));
        assert_eq!(verify(&[KEY], Some(&format!("t={T},v1={V1}")), BODY, T, 180), Ok(0));
    }

    #[test]
    fn one_changed_byte_or_key_fails() {
        let h = sign(KEY, T, BODY);
        let mut body = BODY.to_vec();
        body[5] ^= 1;
        assert_eq!(verify(&[KEY], Some(&h), &body, T, 180), Err(Reason::Mismatch));
        assert_eq!(verify(&["another key"], Some(&h), BODY, T, 180), Err(Reason::Mismatch));
        // A signature over the same body at another t is not this one.
        let other_t = sign(KEY, T + 1, BODY).replace(&format!("t={}", T + 1), &format!("t={T}"));
        assert_eq!(verify(&[KEY], Some(&other_t), BODY, T, 180), Err(Reason::Mismatch));
    }

    #[test]
    fn tolerance_both_ways() {
        let h = sign(KEY, T, BODY);
        assert_eq!(verify(&[KEY], Some(&h), BODY, T + 180, 180), Ok(0));
        assert_eq!(verify(&[KEY], Some(&h), BODY, T + 181, 180), Err(Reason::Stale));
        assert_eq!(verify(&[KEY], Some(&h), BODY, T - 180, 180), Ok(0));
        assert_eq!(verify(&[KEY], Some(&h), BODY, T - 181, 180), Err(Reason::Future));
    }

    #[test]
    fn rotation_any_key_and_any_v1() {
        let h = sign(KEY, T, BODY);
        assert_eq!(verify(&["old key", KEY], Some(&h), BODY, T, 180), Ok(1));
        let two = format!("t={T},v1={},v1={}", "00".repeat(32), h.split("v1=").nth(1).unwrap());
        assert_eq!(verify(&[KEY], Some(&two), BODY, T, 180), Ok(0));
        let empty: [&str; 0] = [];
        assert_eq!(verify(&empty, Some(&h), BODY, T, 180), Err(Reason::NoKeys));
    }

    #[test]
    fn malformed_headers() {
        let good = sign(KEY, T, BODY);
        let v1 = good.split("v1=").nth(1).unwrap().to_string();
        assert_eq!(verify(&[KEY], None, BODY, T, 180), Err(Reason::Missing));
        for h in [
            String::new(),
            "garbage".into(),
            format!("v1={v1}"),
            format!("t={T}"),
            format!("t=abc,v1={v1}"),
            format!("t=-5,v1={v1}"),
            format!("t={T},v1=zz"),
            format!("t={T},v1={}", &v1[..62]),
            format!("t={T},t={T},v1={v1}"),
            format!("t=99999999999999999999,v1={v1}"),
        ] {
            assert!(matches!(verify(&[KEY], Some(&h), BODY, T, 180), Err(Reason::Malformed(_))), "{h}");
        }
        // Spaces around parts are tolerated, unknown schemes are skipped.
        assert_eq!(verify(&[KEY], Some(&format!(" t={T} , v0=abc, v1={v1} ")), BODY, T, 180), Ok(0));
    }
}
