//! Who a training row belongs to, without saying who they are.
//!
//! Emails are normalised (trimmed, lower-cased) and replaced by a keyed hash,
//! HMAC-SHA256 under the shop's user key, before anything leaves the shop
//! mirror. The same function serves training, serving and the storefront, so an
//! order, a logged-in event and a recommendation request for one email meet on
//! one id. Without the key, the id cannot be reversed or recomputed from a list
//! of emails.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret key of the user-id hash.
#[derive(Clone)]
pub struct UserKey([u8; 32]);

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(..)")
    }
}

impl UserKey {
    /// A key from its 64-hex-digit form (as `MANIREC_USER_KEY` and the key file hold it).
    pub fn from_hex(hex_key: &str) -> Result<Self, String> {
        let bytes =
            hex::decode(hex_key.trim()).map_err(|e| format!("user key is not hexadecimal: {e}"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "user key must be 32 bytes (64 hex digits), got {} bytes",
                b.len()
            )
        })?;
        Ok(UserKey(bytes))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        UserKey(bytes)
    }

    /// The 64-hex-digit form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The training user id of an email: `u_` and 32 hex digits (128 bits of the HMAC).
    pub fn user_id_for_email(&self, email: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(normalize_email(email).as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("u_{}", hex::encode(&digest[..16]))
    }

    /// The training user id of any user reference: emails are hashed, other ids
    /// (session, device, already-hashed ids, public data set ids) are kept.
    pub fn user_id(&self, raw: &str) -> String {
        if looks_like_email(raw) {
            self.user_id_for_email(raw)
        } else {
            raw.trim().to_owned()
        }
    }
}

/// Trims and lower-cases an email.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether a user reference is an email (and so must never be stored as is).
pub fn looks_like_email(raw: &str) -> bool {
    raw.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_customer_gets_the_same_id_however_the_email_is_typed() {
        let key = UserKey::from_bytes([7; 32]);
        let a = key.user_id_for_email("  Ana.Lopez@Example.COM ");
        assert_eq!(a, key.user_id_for_email("ana.lopez@example.com"));
        assert_eq!(a.len(), 34);
        assert!(!a.contains('@'));
        assert_ne!(
            a,
            UserKey::from_bytes([8; 32]).user_id_for_email("ana.lopez@example.com")
        );
    }

    #[test]
    fn only_emails_are_hashed() {
        let key = UserKey::from_bytes([1; 32]);
        assert_eq!(key.user_id("sess-42"), "sess-42");
        assert!(key.user_id("x@y.z").starts_with("u_"));
    }

    #[test]
    fn hex_keys_round_trip_and_bad_ones_say_why() {
        let key = UserKey::from_bytes([3; 32]);
        assert_eq!(UserKey::from_hex(&key.to_hex()).unwrap().0, key.0);
        assert!(UserKey::from_hex("abcd").unwrap_err().contains("32 bytes"));
        assert!(UserKey::from_hex("zz").unwrap_err().contains("hexadecimal"));
    }
}
