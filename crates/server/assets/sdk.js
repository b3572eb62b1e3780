/*! manirec storefront SDK: tracks product views, clicks, carts, wishlists,
 * purchases and recommendation impressions/clicks; batches them, retries with
 * back-off, and flushes with sendBeacon when the page is hidden. No dependencies.
 *
 *   <script src="https://RECS.HOST/sdk.js" data-endpoint="https://RECS.HOST"
 *           data-user-token="EXPIRY.HMAC"></script>  // made by the theme, see README
 *   manirec.identify("customer@example.com")     // after login (optional)
 *   manirec.track("add_to_cart", "PRODUCT_ID")
 *   manirec.impression(requestId, ["P1", "P2"])  // recommendations shown
 * Markup is tracked on its own: [data-manirec-view="ID"] is a product view on
 * load, a click on [data-manirec-product="ID"] is a product_click (a rec_click
 * when it also has data-manirec-request="REQUEST_ID").
 *
 * The widget: a block renders itself as a grid of product cards.
 *   <div data-manirec-block="for-you|similar|popular" data-item="ID" data-k="8"
 *        data-category="mugs" data-currency="EUR"></div>
 * Cards come from a <template data-manirec-card> inside the block ({{title}},
 * {{image}}, {{price}}, {{url}}, {{item_id}} are replaced, escaped), else from
 * manirec.renderCard(item, block) (an Element or HTML), else the default card.
 * Shown blocks send rec_impression, clicked cards rec_click, with the answer's
 * request id. When manirec is down or answers an error the block is left as it
 * was. manirec.render(root) renders blocks added later.
 */
(function (window, document) {
  "use strict";
  if (window.manirec && window.manirec.version) return;
  var script = document.currentScript;
  var cfg = {
    endpoint: (script && script.getAttribute("data-endpoint")) || (script ? new URL(script.src).origin : ""),
    // The shopper's signed token: without it a user_id is not trusted.
    userToken: (script && script.getAttribute("data-user-token")) || null,
    batchSize: 20,
    flushMs: 5000,
    sessionIdleMs: 30 * 60 * 1000,
  };
  var queue = [];
  var userId = null;
  var retryMs = 0;
  var timer = null;
  var sending = false;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }
  function stored(storage, key, make) {
    try {
      var v = storage.getItem(key);
      if (!v) { v = make(); storage.setItem(key, v); }
      return v;
    } catch (e) { return make(); } // storage blocked: ids live as long as the page
  }
  var deviceId = stored(window.localStorage, "manirec_device", uuid);
  function sessionId() {
    // A session ends after 30 idle minutes, as analytics tools count them.
    var now = Date.now();
    var last = Number(stored(window.sessionStorage, "manirec_seen", function () { return String(now); }));
    var id = stored(window.sessionStorage, "manirec_session", uuid);
    if (now - last > cfg.sessionIdleMs) {
      id = uuid();
      try { sessionStorage.setItem("manirec_session", id); } catch (e) {}
    }
    try { sessionStorage.setItem("manirec_seen", String(now)); } catch (e) {}
    return id;
  }

  function track(type, productId, extra) {
    extra = extra || {};
    var event = {
      event_id: uuid(),
      event_type: type,
      product_id: String(productId),
      session_id: sessionId(),
      device_id: deviceId,
      timestamp: Date.now(),
    };
    if (userId) {
      event.user_id = userId;
      if (cfg.userToken) event.user_token = cfg.userToken;
    }
    if (extra.request_id) event.request_id = extra.request_id;
    if (extra.properties) event.properties = extra.properties;
    queue.push(event);
    if (queue.length >= cfg.batchSize) flush(); else schedule(cfg.flushMs);
  }

  function schedule(ms) {
    if (!timer) timer = setTimeout(function () { timer = null; flush(); }, ms);
  }

  function flush() {
    if (sending || !queue.length) return;
    var batch = queue.splice(0, 500);
    sending = true;
    // text/plain keeps the request "simple": no CORS preflight, and sendBeacon accepts it.
    fetch(cfg.endpoint + "/v1/events", {
      method: "POST", body: JSON.stringify(batch), keepalive: true,
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
    }).then(function (r) {
      sending = false;
      if (r.ok || (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429)) {
        retryMs = 0; // delivered, or refused for good (the server said why): do not resend
        if (queue.length) schedule(0);
      } else { retry(batch); }
    }, function () { sending = false; retry(batch); });
  }

  function retry(batch) {
    queue = batch.concat(queue);
    retryMs = Math.min(retryMs ? retryMs * 2 : 1000, 60000);
    schedule(retryMs);
  }

  function flushOnHide() {
    while (queue.length) {
      var batch = queue.splice(0, 500);
      var body = JSON.stringify(batch);
      var sent = navigator.sendBeacon &&
        navigator.sendBeacon(cfg.endpoint + "/v1/events", new Blob([body], { type: "text/plain;charset=UTF-8" }));
      if (!sent) {
        fetch(cfg.endpoint + "/v1/events", { method: "POST", body: body, keepalive: true,
          headers: { "Content-Type": "text/plain;charset=UTF-8" } }).catch(function () {});
      }
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") flushOnHide();
  });
  window.addEventListener("pagehide", flushOnHide);

  document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest && e.target.closest("[data-manirec-product]");
    if (!el) return;
    var request = el.getAttribute("data-manirec-request");
    track(request ? "rec_click" : "product_click", el.getAttribute("data-manirec-product"),
      request ? { request_id: request } : {});
  }, true);

  function trackViews() {
    var views = document.querySelectorAll("[data-manirec-view]");
    for (var i = 0; i < views.length; i++) track("product_view", views[i].getAttribute("data-manirec-view"));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", trackViews);
  else trackViews();

  // ---- the widget ----

  var BLOCKS = {
    "for-you": function (block) {
      var q = "session_id=" + encodeURIComponent(sessionId());
      if (userId && cfg.userToken) {
        q += "&user_id=" + encodeURIComponent(userId) + "&user_token=" + encodeURIComponent(cfg.userToken);
      }
      return "/v1/recommendations?" + q + "&";
    },
    similar: function (block) {
      var item = block.getAttribute("data-item");
      return item ? "/v1/items/" + encodeURIComponent(item) + "/similar?" : null;
    },
    popular: function () { return "/v1/popular?"; },
  };

  function escapeHtml(v) {
    return String(v == null ? "" : v).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  // Only web links (and inline images): never javascript: or other schemes.
  function safeUrl(u, image) {
    if (!u) return "";
    if (image && /^data:image\//i.test(u)) return u;
    try {
      var p = new URL(u, location.href).protocol;
      return p === "http:" || p === "https:" ? u : "";
    } catch (e) { return ""; }
  }
  function formatPrice(price, block) {
    if (typeof price !== "number") return "";
    var currency = block.getAttribute("data-currency");
    if (currency && window.Intl && Intl.NumberFormat) {
      try { return new Intl.NumberFormat(undefined, { style: "currency", currency: currency }).format(price); } catch (e) {}
    }
    return price.toFixed(2);
  }
  function fields(item, block) {
    return {
      item_id: item.item_id,
      title: item.title || "",
      image: safeUrl(item.image, true),
      price: formatPrice(item.price, block),
      url: safeUrl(item.url, false),
    };
  }

  function defaultCard(f) {
    var card = document.createElement(f.url ? "a" : "div");
    card.className = "manirec-card";
    if (f.url) card.href = f.url;
    card.style.cssText = "display:block;color:inherit;text-decoration:none;border:1px solid #ddd;border-radius:6px;padding:8px;";
    var img = document.createElement("img");
    img.className = "manirec-card-image";
    img.alt = f.title;
    img.loading = "lazy";
    img.style.cssText = "display:block;width:100%;aspect-ratio:1;object-fit:cover;background:#eee;border-radius:4px;";
    if (f.image) img.src = f.image;
    card.appendChild(img);
    var title = document.createElement("span");
    title.className = "manirec-card-title";
    title.style.cssText = "display:block;margin-top:6px;font-weight:600;";
    title.textContent = f.title;
    card.appendChild(title);
    if (f.price) {
      var price = document.createElement("span");
      price.className = "manirec-card-price";
      price.style.cssText = "display:block;";
      price.textContent = f.price;
      card.appendChild(price);
    }
    return card;
  }

  function fromHtml(html) {
    var t = document.createElement("template");
    t.innerHTML = String(html);
    return t.content;
  }

  // One card: the block's template, else the page's hook, else the default.
  function card(item, block, template) {
    var f = fields(item, block);
    var out = null;
    if (template) {
      out = fromHtml(template.innerHTML.replace(/\{\{\s*(item_id|title|image|price|url)\s*\}\}/g, function (_, k) {
        return escapeHtml(f[k]);
      }));
    } else if (typeof window.manirec.renderCard === "function") {
      try {
        var made = window.manirec.renderCard(item, block);
        out = made && made.nodeType ? made : made ? fromHtml(made) : null;
      } catch (e) { out = null; }
    }
    if (!out) out = defaultCard(f);
    // The click listener above turns a click inside it into a rec_click.
    var root = out.nodeType === 11 ? out.firstElementChild : out;
    return { node: out, root: root };
  }

  function render(block, answer) {
    var items = (answer && answer.items) || [];
    if (!answer.request_id || !items.length) { block.setAttribute("data-manirec-state", "empty"); return; }
    var template = block.querySelector("template[data-manirec-card]");
    var grid = document.createElement("div");
    grid.className = "manirec-grid";
    grid.style.cssText = "display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:12px;";
    var ids = [];
    for (var i = 0; i < items.length; i++) {
      var c = card(items[i], block, template);
      if (!c.root) continue;
      c.root.setAttribute("data-manirec-product", items[i].item_id);
      c.root.setAttribute("data-manirec-request", answer.request_id);
      grid.appendChild(c.node);
      ids.push(items[i].item_id);
    }
    // The shop's own content of the block (a fallback) gives way to the grid.
    var keep = template ? [template] : [];
    while (block.firstChild) block.removeChild(block.firstChild);
    for (var j = 0; j < keep.length; j++) block.appendChild(keep[j]);
    block.appendChild(grid);
    block.setAttribute("data-manirec-state", "rendered");
    block.setAttribute("data-manirec-request", answer.request_id);
    whenVisible(block, function () { window.manirec.impression(answer.request_id, ids); });
    try {
      block.dispatchEvent(new CustomEvent("manirec:render", { detail: { request_id: answer.request_id, items: ids } }));
    } catch (e) {}
  }

  function whenVisible(el, then) {
    if (!window.IntersectionObserver) { then(); return; }
    var seen = false;
    var io = new IntersectionObserver(function (entries) {
      for (var i = 0; i < entries.length; i++) {
        if (entries[i].isIntersecting && !seen) { seen = true; io.disconnect(); then(); }
      }
    });
    io.observe(el);
  }

  function failed(block) {
    block.setAttribute("data-manirec-state", "failed");
    try { block.dispatchEvent(new CustomEvent("manirec:error")); } catch (e) {}
  }

  function load(block) {
    if (block.getAttribute("data-manirec-state")) return; // already asked
    var kind = BLOCKS[block.getAttribute("data-manirec-block")];
    var path = kind && kind(block);
    if (!path) { failed(block); return; }
    block.setAttribute("data-manirec-state", "loading");
    var k = block.getAttribute("data-k");
    var category = block.getAttribute("data-category");
    var url = cfg.endpoint + path + "details=1" + (k ? "&k=" + encodeURIComponent(k) : "") +
      (category ? "&category=" + encodeURIComponent(category) : "");
    fetch(url, { credentials: "omit" }).then(function (r) {
      if (!r.ok) throw new Error("manirec answered " + r.status);
      return r.json();
    }).then(function (answer) {
      render(block, answer);
    }).catch(function () { failed(block); }); // the page stays as it was
  }

  function renderBlocks(root) {
    try {
      var blocks = (root || document).querySelectorAll("[data-manirec-block]");
      for (var i = 0; i < blocks.length; i++) load(blocks[i]);
    } catch (e) {}
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { renderBlocks(); });
  else setTimeout(renderBlocks, 0);

  window.manirec = {
    version: "1",
    render: renderBlocks,
    renderCard: null,
    config: cfg,
    track: track,
    flush: flush,
    identify: function (id, token) {
      userId = id ? String(id).trim() : null;
      if (token) cfg.userToken = String(token);
    },
    impression: function (requestId, productIds) {
      for (var i = 0; i < productIds.length; i++) track("rec_impression", productIds[i], { request_id: requestId });
    },
    deviceId: function () { return deviceId; },
  };
})(window, document);
