use manirec_store::BehaviorEvent;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const CATEGORIES: &[(&str, f64, f64)] = &[
    // name, share of the catalogue, typical price
    ("T-Shirts", 0.22, 19.9),
    ("Hoodies", 0.10, 39.9),
    ("Mugs", 0.12, 14.9),
    ("Posters", 0.10, 17.9),
    ("Phone Cases", 0.09, 21.9),
    ("Tote Bags", 0.07, 16.9),
    ("Stickers", 0.08, 4.9),
    ("Canvas Prints", 0.05, 49.9),
    ("Pillows", 0.05, 24.9),
    ("Hats", 0.05, 22.9),
    ("Notebooks", 0.04, 12.9),
    ("Socks", 0.03, 11.9),
];

const COUNTRIES: &[&str] = &["US", "GB", "DE", "FR", "CA", "AU"];

const THEMES: &[&str] = &[
    "Cats",
    "Space",
    "Floral",
    "Retro",
    "Minimal",
    "Anime",
    "Mountains",
    "Typography",
    "Skulls",
    "Ocean",
    "Botanical",
    "Pixel Art",
];

/// How big a shop to generate.
#[derive(Debug, Clone)]
pub struct ShopSpec {
    /// Seed: same seed, same shop.
    pub seed: u64,
    /// "Now", Unix seconds: the shop's history ends here.
    pub now: i64,
    /// Customer accounts.
    pub accounts: usize,
    /// Base products (blanks) across the categories.
    pub base_products: usize,
    /// Designers (accounts that publish designs).
    pub designers: usize,
    /// End products (designs on blanks).
    pub end_products: usize,
    /// Orders over `order_days`.
    pub orders: usize,
    /// Days of order history.
    pub order_days: i64,
    /// Images (mostly design images of end products).
    pub images: usize,
    /// Storefront sessions over `behaviour_days`.
    pub sessions: usize,
    /// Days of storefront behaviour.
    pub behaviour_days: i64,
}

impl ShopSpec {
    /// The seed's scale (DESIGN §1): 800 accounts, 3,000 base products, 1,500 end
    /// products, 400 orders, 8,000 images, four weeks of behaviour.
    pub fn seed_scale(seed: u64, now: i64) -> Self {
        ShopSpec {
            seed,
            now,
            accounts: 800,
            base_products: 3000,
            designers: 120,
            end_products: 1500,
            orders: 400,
            order_days: 120,
            images: 8000,
            sessions: 3000,
            behaviour_days: 28,
        }
    }
}

/// An account of the shop.
#[derive(Debug, Clone)]
pub struct AccountRow {
    /// Integer id.
    pub id: i64,
    /// Email, as customers type them (mixed case, stray spaces).
    pub email: String,
    /// `customer` or `designer`.
    pub role: &'static str,
    /// Sign-up time.
    pub created_at: i64,
    /// Where they live (two-letter code): a customer's usually matches their
    /// first theme (regional tastes), so an account says something before any
    /// order does.
    pub country: &'static str,
}

/// A base product.
#[derive(Debug, Clone)]
pub struct BaseProductRow {
    /// Integer id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Category id (1-based index into the categories).
    pub category_id: i64,
    /// Price.
    pub price: f64,
}

/// An end product (a design on a base product).
#[derive(Debug, Clone)]
pub struct EndProductRow {
    /// UUID, as Shoplazza product ids are.
    pub id: String,
    /// The blank.
    pub base_product_id: i64,
    /// The designer's account id.
    pub designer_id: i64,
    /// Title.
    pub title: String,
    /// Theme of the design.
    pub theme: usize,
    /// Category of its blank.
    pub category: usize,
    /// Published at.
    pub created_at: i64,
    /// Latent appeal (heavy-tailed).
    pub appeal: f64,
}

/// An order.
#[derive(Debug, Clone)]
pub struct OrderRow {
    /// Local integer id.
    pub id: i64,
    /// Shoplazza's id (`11218-000000NN`).
    pub shoplazza_id: String,
    /// Customer email as the checkout captured it.
    pub email: String,
    /// Financial status.
    pub financial_status: &'static str,
    /// Line items, as the shop stores them (a JSON array).
    pub line_items: serde_json::Value,
    /// Order total.
    pub total_price: f64,
    /// Order time.
    pub created_at: i64,
}

/// An image.
#[derive(Debug, Clone)]
pub struct ImageRow {
    /// Integer id.
    pub id: i64,
    /// `design`, `mockup` or `avatar`.
    pub kind: &'static str,
    /// What it shows (an end product id, or an account id for avatars).
    pub entity_id: String,
    /// Views.
    pub view_count: i64,
    /// Upload time.
    pub created_at: i64,
}

/// A generated shop and its storefront behaviour.
#[derive(Debug, Clone)]
pub struct Shop {
    /// The spec it was generated from.
    pub spec: ShopSpec,
    /// Category names, by id − 1.
    pub categories: Vec<&'static str>,
    /// Accounts (customers and designers).
    pub accounts: Vec<AccountRow>,
    /// Base products.
    pub base_products: Vec<BaseProductRow>,
    /// End products.
    pub end_products: Vec<EndProductRow>,
    /// Orders.
    pub orders: Vec<OrderRow>,
    /// Images.
    pub images: Vec<ImageRow>,
    /// Storefront events, in time order.
    pub events: Vec<BehaviorEvent>,
}

/// A customer's taste: favourite themes and categories, and how active they are.
struct Taste {
    themes: [usize; 2],
    categories: [usize; 2],
    activity: f64,
}

fn pareto(rng: &mut ChaCha8Rng, alpha: f64) -> f64 {
    let u: f64 = rng.random();
    (1.0 - u).powf(-1.0 / alpha)
}

fn pick_weighted(rng: &mut ChaCha8Rng, cumulative: &[f64]) -> usize {
    let total = *cumulative.last().expect("non-empty weights");
    let x = rng.random::<f64>() * total;
    cumulative
        .partition_point(|&c| c <= x)
        .min(cumulative.len() - 1)
}

fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    weights
        .into_iter()
        .scan(0.0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect()
}

fn uuid(rng: &mut ChaCha8Rng) -> String {
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

const FIRST: &[&str] = &[
    "ana", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "iris", "jack", "kim",
    "liam", "mia", "noah", "olga", "paul", "quinn", "rosa", "sam", "tara", "umar", "vera", "wen",
    "yuki",
];
const LAST: &[&str] = &[
    "lopez", "smith", "chen", "muller", "rossi", "kowalski", "silva", "tanaka", "novak", "dubois",
    "kim", "ahmed", "berg", "costa",
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "proton.me",
];

/// Generates a shop from `spec`.
pub fn generate(spec: &ShopSpec) -> Shop {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let day = 86_400;
    let shop_start = spec.now - 400 * day;

    // Accounts: designers first, then customers.
    let mut accounts: Vec<AccountRow> = (0..spec.accounts + spec.designers)
        .map(|i| {
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            let mut email = format!(
                "{first}.{last}{i}@{}",
                DOMAINS[rng.random_range(0..DOMAINS.len())]
            );
            // Real checkouts: some capitalise, some leave spaces.
            if rng.random_bool(0.15) {
                email = format!(" {}", capitalise(&email));
            }
            AccountRow {
                id: i as i64 + 1,
                email,
                role: if i < spec.designers {
                    "designer"
                } else {
                    "customer"
                },
                created_at: shop_start + rng.random_range(0..380 * day),
                country: "",
            }
        })
        .collect();

    // Base products spread over categories by share.
    let category_cum = cumulative(CATEGORIES.iter().map(|c| c.1));
    let base_products: Vec<BaseProductRow> = (0..spec.base_products)
        .map(|i| {
            let c = pick_weighted(&mut rng, &category_cum);
            let (name, _, price) = CATEGORIES[c];
            let style = [
                "Classic",
                "Premium",
                "Eco",
                "Oversized",
                "Slim",
                "Vintage",
                "Kids",
            ][rng.random_range(0..7)];
            BaseProductRow {
                id: i as i64 + 1,
                title: format!("{style} {} #{}", singular(name), i + 1),
                category_id: c as i64 + 1,
                price: ((price * rng.random_range(0.8..1.3)) * 100.0).round() / 100.0,
            }
        })
        .collect();
    let mut bases_by_category: Vec<Vec<usize>> = vec![Vec::new(); CATEGORIES.len()];
    for (i, b) in base_products.iter().enumerate() {
        bases_by_category[b.category_id as usize - 1].push(i);
    }

    // Designers: a theme and a following.
    let designer_theme: Vec<usize> = (0..spec.designers)
        .map(|_| rng.random_range(0..THEMES.len()))
        .collect();
    let designer_cum = cumulative((0..spec.designers).map(|_| pareto(&mut rng, 1.3)));
    let end_products: Vec<EndProductRow> = (0..spec.end_products)
        .map(|_| {
            let d = pick_weighted(&mut rng, &designer_cum);
            let theme = if rng.random_bool(0.85) {
                designer_theme[d]
            } else {
                rng.random_range(0..THEMES.len())
            };
            let mut category = pick_weighted(&mut rng, &category_cum);
            while bases_by_category[category].is_empty() {
                category = (category + 1) % CATEGORIES.len();
            }
            let base = &base_products[bases_by_category[category]
                [rng.random_range(0..bases_by_category[category].len())]];
            let motif = [
                "Dream", "Wave", "Garden", "Orbit", "Nap", "Storm", "Bloom", "Echo", "Drift",
                "Glow",
            ][rng.random_range(0..10)];
            EndProductRow {
                id: uuid(&mut rng),
                base_product_id: base.id,
                designer_id: d as i64 + 1,
                title: format!(
                    "{} {motif} {}",
                    THEMES[theme],
                    singular(CATEGORIES[category].0)
                ),
                theme,
                category,
                // The catalogue grows: ages u^1.5 of a year, so about 8 % of
                // the designs are from the last week (new designs with no
                // history yet, the two-tower model's cold start).
                created_at: spec.now - (rng.random::<f64>().powf(1.5) * (360 * day) as f64) as i64,
                appeal: pareto(&mut rng, 2.5),
            }
        })
        .collect();

    // Customers' tastes.
    let tastes: Vec<Taste> = (0..spec.accounts)
        .map(|_| Taste {
            themes: [
                rng.random_range(0..THEMES.len()),
                rng.random_range(0..THEMES.len()),
            ],
            categories: [
                pick_weighted(&mut rng, &category_cum),
                pick_weighted(&mut rng, &category_cum),
            ],
            activity: pareto(&mut rng, 1.2),
        })
        .collect();
    // Countries from a stream of their own: the rest of the shop is the same
    // with or without them.
    let mut geo = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x6e0);
    for (i, a) in accounts.iter_mut().enumerate() {
        let home = i
            .checked_sub(spec.designers)
            .map(|c| COUNTRIES[tastes[c].themes[0] % COUNTRIES.len()]);
        a.country = match home {
            Some(h) if geo.random_bool(0.7) => h,
            _ => COUNTRIES[geo.random_range(0..COUNTRIES.len())],
        };
    }
    let preference = |taste: &Taste, p: &EndProductRow, t: i64| -> f64 {
        if p.created_at > t {
            return 0.0; // not published yet
        }
        let theme = if taste.themes.contains(&p.theme) {
            25.0
        } else {
            1.0
        };
        let category = if taste.categories.contains(&p.category) {
            4.0
        } else {
            1.0
        };
        p.appeal * theme * category
    };
    let customer_account = |c: usize| &accounts[spec.designers + c];
    let activity_cum = cumulative(tastes.iter().map(|t| t.activity));

    // Orders: returning customers by activity, 1–4 products chosen by taste.
    let mut orders: Vec<OrderRow> = (0..spec.orders)
        .map(|_| {
            let c = pick_weighted(&mut rng, &activity_cum);
            let created_at = spec.now - rng.random_range(0..spec.order_days * day);
            let weights = cumulative(
                end_products
                    .iter()
                    .map(|p| preference(&tastes[c], p, created_at)),
            );
            let n = 1 + (0..3).filter(|_| rng.random_bool(0.3)).count();
            let mut total = 0.0;
            let lines: Vec<serde_json::Value> = (0..n)
                .map(|_| {
                    let p = &end_products[pick_weighted(&mut rng, &weights)];
                    let price = base_products[p.base_product_id as usize - 1].price + 5.0;
                    let quantity = if rng.random_bool(0.1) { 2 } else { 1 };
                    total += price * quantity as f64;
                    json!({
                        "product_id": p.id,
                        "variant_id": uuid(&mut rng),
                        "quantity": quantity,
                        "price": format!("{price:.2}"),
                        "title": p.title,
                    })
                })
                .collect();
            let status = match rng.random_range(0..100) {
                0..82 => "paid",
                82..88 => "pending",
                88..92 => "refunded",
                92..96 => "cancelled",
                96..98 => "partially_refunded",
                _ => "waiting",
            };
            OrderRow {
                id: 0,
                shoplazza_id: String::new(),
                email: customer_account(c).email.clone(),
                financial_status: status,
                line_items: serde_json::Value::Array(lines),
                total_price: (total * 100.0).round() / 100.0,
                created_at,
            }
        })
        .collect();
    orders.sort_by_key(|o| o.created_at);
    for (i, o) in orders.iter_mut().enumerate() {
        o.id = i as i64 + 1;
        o.shoplazza_id = format!("11218-{:08}", i + 1);
    }

    // Images: a few design images per product (views follow appeal), mockups, avatars.
    let mut images = Vec::with_capacity(spec.images);
    let mut next_product = 0usize;
    while images.len() < spec.images {
        let id = images.len() as i64 + 1;
        let roll = rng.random_range(0..100);
        if roll < 8 {
            let a = &accounts[rng.random_range(0..accounts.len())];
            images.push(ImageRow {
                id,
                kind: "avatar",
                entity_id: a.id.to_string(),
                view_count: rng.random_range(0..50),
                created_at: a.created_at,
            });
            continue;
        }
        let p = &end_products[next_product % end_products.len()];
        next_product += 1;
        let kind = if roll < 20 { "mockup" } else { "design" };
        // Uploads of one product come in bursts: several images in the same second.
        let created_at = p.created_at
            + if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..3600)
            };
        let views = (p.appeal * pareto(&mut rng, 1.5) * 20.0) as i64 - 10;
        images.push(ImageRow {
            id,
            kind,
            entity_id: p.id.clone(),
            view_count: views.max(0),
            created_at,
        });
    }

    let events = behaviour(
        spec,
        &mut rng,
        &accounts,
        &end_products,
        &tastes,
        spec.designers,
        preference,
    );
    Shop {
        spec: spec.clone(),
        categories: CATEGORIES.iter().map(|c| c.0).collect(),
        accounts,
        base_products,
        end_products,
        orders,
        images,
        events,
    }
}

/// Storefront sessions: known customers (logged in part of the time) and
/// anonymous devices, browsing by taste with a funnel.
fn behaviour(
    spec: &ShopSpec,
    rng: &mut ChaCha8Rng,
    accounts: &[AccountRow],
    products: &[EndProductRow],
    tastes: &[Taste],
    designers: usize,
    preference: impl Fn(&Taste, &EndProductRow, i64) -> f64,
) -> Vec<BehaviorEvent> {
    let day = 86_400;
    let start = spec.now - spec.behaviour_days * day;
    let activity_cum = cumulative(tastes.iter().map(|t| t.activity));
    let devices: Vec<String> = (0..spec.sessions / 2)
        .map(|i| format!("d-{:06}", i + 1))
        .collect();
    let mut events = Vec::new();
    let mut seq = 0u64;
    for s in 0..spec.sessions {
        // Customers browse from their own device; an anonymous device is one
        // visitor whose taste stays the same from visit to visit.
        let known = rng.random_bool(0.5);
        let (taste, user, device) = if known {
            let c = pick_weighted(rng, &activity_cum);
            (
                &tastes[c],
                rng.random_bool(0.6)
                    .then(|| accounts[designers + c].email.trim().to_owned()),
                format!("d-c{:05}", c + 1),
            )
        } else {
            let d = rng.random_range(0..devices.len());
            (&tastes[d % tastes.len()], None, devices[d].clone())
        };
        let session = format!("s-{:06}", s + 1);
        let mut t = (start + rng.random_range(0..spec.behaviour_days * day)) * 1000;
        let weights = cumulative(products.iter().map(|p| preference(taste, p, t / 1000)));
        let views = 1 + (pareto(rng, 1.4) * 2.0) as usize;
        for _ in 0..views.min(30) {
            let p = &products[pick_weighted(rng, &weights)];
            let mut emit = |kind: &str, t: i64| {
                seq += 1;
                events.push(BehaviorEvent {
                    event_id: format!("ev-{:08}", seq),
                    event_type: kind.to_owned(),
                    product_id: p.id.clone(),
                    user_id: user.clone(),
                    session_id: Some(session.clone()),
                    device_id: Some(device.clone()),
                    timestamp_ms: t,
                    request_id: None,
                    properties: None,
                });
            };
            if rng.random_bool(0.3) {
                emit("product_click", t);
                t += rng.random_range(500..3000);
            }
            emit("product_view", t);
            t += rng.random_range(5_000..120_000);
            if rng.random_bool(0.03) {
                emit("add_to_wishlist", t);
            }
            if rng.random_bool(0.07) {
                emit("add_to_cart", t);
                t += rng.random_range(10_000..300_000);
                if rng.random_bool(0.35) {
                    emit("purchase", t);
                }
            }
        }
    }
    events.sort_by_key(|e| e.timestamp_ms);
    events
}

fn singular(category: &str) -> &str {
    category.strip_suffix('s').unwrap_or(category)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
