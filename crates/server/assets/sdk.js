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

  window.manirec = {
    version: "1",
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
