//! The storefront's own settings (`[storefront]` in manirec.toml): where a
//! product's page is, so that answers asked with `details=1` carry a link the
//! SDK's widget can render.
//!
//! `product_url` is a template with two placeholders, `{handle}` (the product
//! page's slug in the shop) and `{id}` (the item id). Each value is
//! percent-encoded as one path segment, so an id holding `/`, `?` or `#` can
//! never leave its segment or change the link's meaning. A template is checked
//! once, at load: an unknown placeholder or a stray brace is an error then, not
//! a broken link on every card.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

/// Everything but RFC 3986's unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The default product page of Shoplazza (and Shopify) themes.
pub const DEFAULT_PRODUCT_URL: &str = "/products/{handle}";

/// `[storefront]` in manirec.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storefront {
    /// The template of a product page's URL (absolute, or relative to the
    /// shop's page): `{handle}` and `{id}` are replaced.
    pub product_url: String,
}

impl Default for Storefront {
    fn default() -> Self {
        Storefront {
            product_url: DEFAULT_PRODUCT_URL.to_owned(),
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Handle,
    Id,
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!(
                "product_url {template:?} has a '}}' that closes nothing"
            ));
        }
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("product_url {template:?} has a '{{' that is never closed"))?;
        pieces.push(match &after[..close] {
            "handle" => Piece::Handle,
            "id" => Piece::Id,
            other => {
                return Err(format!(
                    "product_url {template:?} has the placeholder {{{other}}}; \
                     only {{handle}} and {{id}} are known"
                ))
            }
        });
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

impl Storefront {
    /// Checks the template: placeholders are `{handle}` and `{id}` only.
    pub fn validate(&self) -> Result<(), String> {
        if self.product_url.trim().is_empty() {
            return Err("product_url is empty".into());
        }
        parse(&self.product_url).map(|_| ())
    }

    /// The page of item `id`; `None` when the template needs a handle and the
    /// item has none (no link is better than a wrong one).
    pub fn product_url(&self, id: &str, handle: Option<&str>) -> Option<String> {
        let pieces = parse(&self.product_url).ok()?;
        let mut url = String::with_capacity(self.product_url.len() + id.len() + 16);
        for piece in pieces {
            match piece {
                Piece::Text(t) => url.push_str(t),
                Piece::Id => url.extend(utf8_percent_encode(id, SEGMENT)),
                Piece::Handle => url.extend(utf8_percent_encode(handle?, SEGMENT)),
            }
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(t: &str) -> Storefront {
        Storefront {
            product_url: t.into(),
        }
    }

    #[test]
    fn the_default_links_by_handle_and_needs_one() {
        let s = Storefront::default();
        assert!(s.validate().is_ok());
        assert_eq!(
            s.product_url("e-1", Some("cat-tee")).as_deref(),
            Some("/products/cat-tee")
        );
        assert_eq!(s.product_url("e-1", None), None);
    }

    #[test]
    fn values_are_encoded_as_one_path_segment() {
        let s = template("https://shop.example/p/{id}?h={handle}");
        assert_eq!(
            s.product_url("a/b?c#d", Some("chat noir é~")).as_deref(),
            Some("https://shop.example/p/a%2Fb%3Fc%23d?h=chat%20noir%20%C3%A9~")
        );
        // An id-only template links items without a handle.
        assert_eq!(
            template("/item/{id}").product_url("42", None).as_deref(),
            Some("/item/42")
        );
        assert_eq!(
            template("/{id}-{id}").product_url("x", None).as_deref(),
            Some("/x-x")
        );
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        for bad in [
            "/products/{slug}",
            "/products/{handle",
            "/products/handle}",
            "",
        ] {
            assert!(template(bad).validate().is_err(), "{bad:?}");
        }
        let err = template("/p/{sku}").validate().unwrap_err();
        assert!(err.contains("{sku}") && err.contains("{handle}"), "{err}");
        assert!(template("/static/no-placeholder").validate().is_ok());
    }
}
