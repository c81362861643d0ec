// fieldgate live values for a web page. Include it where the values should appear:
//
//   <script src="https://CLOUD/v1/embed/live.js" data-tenant="acme"
//           data-device="pump-1" data-key="fgk_…"></script>
//
// The key should be read-only, for this device (and streams), and bound to the page's
// origin: the cloud refuses it from any other site. Values are written as text, never
// as markup. On a refusal the box says why and stops asking.
(function () {
  "use strict";
  var me = document.currentScript;
  var api = new URL(me.src).origin;
  var cfg = me.dataset.tenant ? me.dataset : Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
  var every = Math.max(1000, Number(cfg.interval || 2000));
  var box = document.createElement("div");
  box.className = "fieldgate-live";
  box.setAttribute("data-state", "loading");
  box.textContent = "Connecting to " + api + " …";
  me.parentNode.insertBefore(box, me);

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function show(rows) {
    var table = document.createElement("table");
    var head = document.createElement("tr");
    ["datastream", "value", "quality", "time"].forEach(function (h) {
      var th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    });
    table.appendChild(head);
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-stream", r.point);
      cell(tr, r.point);
      cell(tr, r.value === null ? "—" : String(r.value));
      cell(tr, r.quality);
      cell(tr, new Date(r.ts_ns / 1e6).toISOString());
      table.appendChild(tr);
    });
    box.replaceChildren(table);
    box.setAttribute("data-state", "live");
  }

  function refuse(code, message) {
    box.textContent = "Refused by the cloud (" + code + "): " + message;
    box.setAttribute("data-state", "refused");
    box.setAttribute("data-code", code);
  }

  function poll() {
    var url = api + "/v1/tenants/" + encodeURIComponent(cfg.tenant) + "/devices/" +
      encodeURIComponent(cfg.device) + "/latest";
    fetch(url, { headers: { Authorization: "Bearer " + cfg.key } })
      .then(function (r) {
        return r.json().then(function (body) { return [r.status, body]; });
      })
      .then(function (x) {
        if (x[0] === 200) {
          show(x[1]);
          setTimeout(poll, every);
        } else {
          refuse(x[1].error || "http_" + x[0], x[1].message || "");
        }
      })
      .catch(function (e) {
        box.setAttribute("data-state", "unreachable");
        box.textContent = "The cloud cannot be reached (" + e + "); trying again.";
        setTimeout(poll, 5 * every);
      });
  }
  poll();
})();
