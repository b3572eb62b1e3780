//! Signed shoppers: a `user_id` (a customer's email) from a browser is trusted
//! only with a user token the shop's theme made with the storefront secret,
//! so knowing someone's email is not enough to read their recommendations or
//! write into their profile.
//!
//! `user_token = "<expiry_unix_seconds>.<hex HMAC-SHA256(secret, "<user_id>|<expiry>")>"`,
//! where `<user_id>` is trimmed and, for an email, lower-cased on both sides.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// None was given.
    Required,
    /// Malformed, expired, or signed for another id or with another secret.
    Invalid,
}

/// The id as both sides sign it: trimmed; an email lower-cased (as the user
/// key hashes it).
fn normalized(user_id: &str) -> String {
    let id = user_id.trim();
    if manirec_pipeline::identity::looks_like_email(id) {
        manirec_pipeline::identity::normalize_email(id)
    } else {
        id.to_owned()
    }
}

fn mac(secret: &str, user_id: &str, expiry: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(format!("{}|{expiry}", normalized(user_id)).as_bytes());
    mac
}

/// The token of `user_id` valid until `expiry` (Unix seconds).
pub fn sign(secret: &str, user_id: &str, expiry: i64) -> String {
    format!(
        "{expiry}.{}",
        hex::encode(mac(secret, user_id, expiry).finalize().into_bytes())
    )
}

/// Checks `token` for `user_id` at `now` (Unix seconds); constant-time.
pub fn verify(secret: &str, user_id: &str, token: Option<&str>, now: i64) -> Result<(), Refusal> {
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    let token = token.ok_or(Refusal::Required)?;
    let (expiry, signature) = token.split_once('.').ok_or(Refusal::Invalid)?;
    let expiry: i64 = expiry.parse().map_err(|_| Refusal::Invalid)?;
    if expiry < now {
        return Err(Refusal::Invalid);
    }
    let signature = hex::decode(signature).map_err(|_| Refusal::Invalid)?;
    mac(secret, user_id, expiry)
        .verify_slice(&signature)
        .map_err(|_| Refusal::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "storefront-secret-0123456789";

    #[test]
    fn a_token_holds_for_its_id_until_it_expires() {
        let token = sign(SECRET, "Ana@Example.com", 2_000);
        assert_eq!(
            verify(SECRET, "ana@example.com ", Some(&token), 1_000),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, "Ana@Example.com", Some(&token), 2_000),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, "ana@example.com", Some(&token), 2_001),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            verify(SECRET, "bob@example.com", Some(&token), 1_000),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            verify(
                "another-secret-0123456",
                "ana@example.com",
                Some(&token),
                1_000
            ),
            Err(Refusal::Invalid)
        );
        // A later expiry with the old signature is a forgery.
        let forged = token.replacen("2000", "9000", 1);
        assert_eq!(
            verify(SECRET, "ana@example.com", Some(&forged), 1_000),
            Err(Refusal::Invalid)
        );
        for garbage in ["x", "1.zz", ".", "abc.def", "2000."] {
            assert_eq!(
                verify(SECRET, "ana@example.com", Some(garbage), 1_000),
                Err(Refusal::Invalid),
                "{garbage}"
            );
        }
        assert_eq!(verify(SECRET, "a@b.c", None, 0), Err(Refusal::Required));
        assert_eq!(
            verify(SECRET, "a@b.c", Some(" "), 0),
            Err(Refusal::Required)
        );
    }

    #[test]
    fn the_format_is_the_documented_one() {
        // "<expiry>.<hex hmac-sha256(secret, "<user_id>|<expiry>")>"
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        m.update(b"ana@example.com|1700000000");
        let expected = format!("1700000000.{}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(sign(SECRET, "ana@example.com", 1_700_000_000), expected);
    }
}
